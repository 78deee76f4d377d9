//! The hash chain: every record carries its sequence number and the SHA-256
//! of the previous record's line; the head file holds the last link.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `prev_hash` of the very first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The last link of the chain: its sequence number (0 before the first
/// record) and the hash of its line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Sequence number of the last record.
    pub seq: u64,
    /// SHA-256 hex of its line (without the newline).
    pub hash: String,
}

impl Link {
    /// The link before the first record.
    pub fn genesis() -> Self {
        Link {
            seq: 0,
            hash: GENESIS.to_string(),
        }
    }

    /// The link after appending `line`.
    pub fn next(&self, line: &str) -> Self {
        Link {
            seq: self.seq + 1,
            hash: hash_line(line.as_bytes()),
        }
    }
}

/// The chain fields every record line holds.
#[derive(Debug, Deserialize)]
pub struct ChainFields {
    /// Sequence number of the record.
    pub seq: u64,
    /// Hash of the previous record's line.
    pub prev_hash: String,
}

/// SHA-256 hex of one record line (without its newline).
pub fn hash_line(line: &[u8]) -> String {
    format!("{:x}", Sha256::digest(line))
}

/// The head file beside the live log file: `FILE.head`.
pub fn head_path(live: &Path) -> PathBuf {
    let mut name = live.as_os_str().to_owned();
    name.push(".head");
    PathBuf::from(name)
}

/// The link stored in a head file, if the file exists.
pub fn read_head(path: &Path) -> std::io::Result<Option<Link>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces the head file atomically (write a temporary file, rename).
pub fn write_head(path: &Path, link: &Link) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(link).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, path)
}
