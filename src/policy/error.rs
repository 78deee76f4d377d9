//! Policy errors: every problem names the file, the line and the fix.

use std::fmt;
use std::path::PathBuf;

/// A position in a policy file (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    /// The policy file.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// 1-based column number.
    pub column: usize,
}

impl Location {
    /// The location of byte offset `offset` in `text` (from file `file`).
    pub fn from_offset(file: &std::path::Path, text: &str, offset: usize) -> Location {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Location {
            file: file.to_path_buf(),
            line,
            column,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One problem found in a policy: where, what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where the problem is, if it has a place in a file.
    pub location: Option<Location>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = &self.location {
            write!(f, "{loc}: ")?;
        }
        write!(f, "{} (fix: {})", self.message, self.fix)
    }
}

/// Errors of the policy layer.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A policy file or directory could not be read.
    #[error("cannot read policy {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// No policy file was given or found.
    #[error("no policy files found in {0:?} (fix: pass *.toml files or a directory holding them)")]
    NoFiles(Vec<PathBuf>),
    /// The policy is not valid; each problem names file:line and a fix.
    #[error("invalid policy:\n{}", list(.0))]
    Invalid(Vec<Problem>),
    /// The user is not in the policy.
    #[error("user \"{0}\" is not known to the privacy policy")]
    UnknownUser(String),
    /// The requested view set does not exist.
    #[error("view set \"{requested}\" does not exist (available to you: {allowed})")]
    UnknownViewSet {
        /// What the client asked for.
        requested: String,
        /// The view sets the user's role may use, comma separated.
        allowed: String,
    },
    /// The user's role may not use the requested view set.
    #[error("role \"{role}\" may not use view set \"{requested}\" (allowed: {allowed})")]
    ForbiddenViewSet {
        /// The user's role.
        role: String,
        /// What the client asked for.
        requested: String,
        /// The view sets the role may use, comma separated.
        allowed: String,
    },
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}
