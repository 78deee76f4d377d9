//! The `[audit]` section of pgveil.toml.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::AuditError;

/// Where and how the privacy log is written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The live JSON Lines file, e.g. `/var/log/pgveil/pgveil-audit.jsonl`;
    /// its directory must exist. Rotated files are `FILE.1`, `FILE.2`, ...
    /// and the chain head is kept in `FILE.head`.
    pub file: Option<PathBuf>,
    /// Rotate the live file before it grows past this many bytes.
    pub max_file_bytes: u64,
    /// How many rotated files to keep besides the live one.
    pub keep_files: usize,
    /// Also write every record to the table `pgveil_audit.log`.
    pub table: bool,
    /// Fail closed: refuse statements when the log cannot keep up or fails.
    pub required: bool,
    /// Events buffered between the data path and the writer.
    pub buffer: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            file: None,
            max_file_bytes: 64 * 1024 * 1024,
            keep_files: 10,
            table: false,
            required: false,
            buffer: 10_000,
        }
    }
}

impl AuditConfig {
    /// True when at least one sink is configured.
    pub fn enabled(&self) -> bool {
        self.file.is_some() || self.table
    }

    /// Checks the settings that no type expresses.
    pub(crate) fn validate(&self, has_pool: bool) -> Result<(), AuditError> {
        if !self.enabled() {
            return Err(AuditError::Config(
                "no sink: set `file` or `table = true`".into(),
            ));
        }
        if self.buffer == 0 {
            return Err(AuditError::Config("`buffer` must be at least 1".into()));
        }
        if self.max_file_bytes == 0 {
            return Err(AuditError::Config(
                "`max_file_bytes` must be at least 1".into(),
            ));
        }
        if self.table && !has_pool {
            return Err(AuditError::Config(
                "`table = true` needs a PostgreSQL pool".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_missing_keys() {
        let c: AuditConfig = toml::from_str("file = \"/tmp/a.jsonl\"\nrequired = true").unwrap();
        assert_eq!(c.file, Some(PathBuf::from("/tmp/a.jsonl")));
        assert!(c.required);
        assert_eq!(c.max_file_bytes, 64 * 1024 * 1024);
        assert_eq!(c.keep_files, 10);
        assert_eq!(c.buffer, 10_000);
        assert!(!c.table);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<AuditConfig>("fille = \"x\"").unwrap_err();
        assert!(err.to_string().contains("fille"), "{err}");
    }

    #[test]
    fn validation_names_the_problem() {
        let none = AuditConfig::default();
        assert!(none.validate(false).is_err());
        let table = AuditConfig {
            table: true,
            ..AuditConfig::default()
        };
        assert!(table.validate(false).is_err());
        assert!(table.validate(true).is_ok());
    }
}
