//! The JSON Lines sink: appends record lines to the live file, rotates it
//! by size (`FILE` → `FILE.1` → `FILE.2` ...), keeps the head file current,
//! and finds the chain's last link again after a restart or a failure.
//!
//! Several processes may write one log (the proxy and `pgveil subject`):
//! each batch is written under an exclusive lock on `FILE.lock`, and a
//! writer that finds the live file changed since its own last write takes
//! the chain's last link from the files before it renders its batch.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use fs4::FileExt;

use super::chain::{hash_line, head_path, read_head, write_head, ChainFields, Link};
use super::AuditError;

const TAIL_CHUNK: u64 = 64 * 1024;

/// The rotating file sink.
pub struct FileSink {
    path: PathBuf,
    head: PathBuf,
    max_bytes: u64,
    keep: usize,
    open: Option<OpenFile>,
    /// Set after a failed write: the next append first looks for lines of
    /// the failed batch that did reach the file.
    interrupted: bool,
    /// The live file as this sink left it (device, inode, size); None
    /// before the first recovery.
    left: Option<(u64, u64, u64)>,
}

/// The exclusive lock of a log, held until dropped: an flock on `FILE.lock`
/// beside the live file (a file that is never renamed).
pub struct LogLock {
    _file: File,
}

/// The lock held, and the chain's last link when another writer appended
/// since this sink last wrote (or the sink had not read it yet).
pub struct Locked {
    /// Released when dropped.
    pub lock: LogLock,
    /// The last link found in the files, if it must replace the writer's.
    pub moved: Option<Link>,
}

/// `FILE.lock`.
pub fn lock_path(live: &Path) -> PathBuf {
    let mut name = live.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

struct OpenFile {
    file: File,
    size: u64,
    identity: (u64, u64),
}

/// `FILE.n`.
pub fn rotated_path(live: &Path, n: usize) -> PathBuf {
    let mut name = live.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The files of a log, oldest first: the rotated files that exist
/// (`FILE.n` ... `FILE.1`), then `FILE` itself.
pub fn log_files(live: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..)
        .map(|n| rotated_path(live, n))
        .take_while(|p| p.exists())
        .collect();
    files.reverse();
    files.push(live.to_path_buf());
    files
}

impl FileSink {
    /// A sink writing to `path`, rotating before `max_bytes`, keeping `keep`
    /// rotated files. Nothing is opened yet.
    pub fn new(path: PathBuf, max_bytes: u64, keep: usize) -> Self {
        FileSink {
            head: head_path(&path),
            path,
            max_bytes,
            keep,
            open: None,
            interrupted: false,
            left: None,
        }
    }

    /// Takes the log's lock, waiting for other writers, and finds out
    /// whether one of them appended since this sink last wrote.
    pub fn lock(&mut self) -> Result<Locked, AuditError> {
        let path = lock_path(&self.path);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| AuditError::io(&path, e))?;
        FileExt::lock(&file).map_err(|e| AuditError::io(&path, e))?;
        let lock = LogLock { _file: file };
        // After a failed write of its own the sink keeps its link: the
        // lines that did reach the file are found again by `append`.
        let unchanged = self.left.is_some() && self.left == self.current()?;
        let moved = if self.interrupted || unchanged {
            None
        } else {
            Some(self.recover()?)
        };
        Ok(Locked { lock, moved })
    }

    /// Device, inode and size of the live file; None if it does not exist.
    fn current(&self) -> Result<Option<(u64, u64, u64)>, AuditError> {
        match std::fs::metadata(&self.path) {
            Ok(m) => Ok(Some((m.dev(), m.ino(), m.len()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AuditError::io(&self.path, e)),
        }
    }

    /// Opens the live file and returns the last link of the chain. A head
    /// file ahead of the files (their tail was cut off) wins, so the next
    /// record shows the gap instead of hiding it.
    fn recover(&mut self) -> Result<Link, AuditError> {
        self.ensure_open()?;
        self.left = self.current()?;
        let in_files = match self.last_line(&self.path)? {
            Some(line) => Some(line),
            None => self.last_line(&rotated_path(&self.path, 1))?,
        };
        let from_files = in_files.map(|line| link_of(&line));
        let head = read_head(&self.head).unwrap_or_else(|e| {
            tracing::warn!(path = %self.head.display(), error = %e, "audit head file unreadable; ignored");
            None
        });
        Ok(match (head, from_files) {
            (Some(h), Some(f)) if h.seq > f.seq => {
                tracing::error!(
                    head_seq = h.seq,
                    file_seq = f.seq,
                    "audit log tail is missing records"
                );
                h
            }
            (_, Some(f)) => f,
            (Some(h), None) => h,
            (None, None) => Link::genesis(),
        })
    }

    /// Appends `lines`, the records `first_seq..` ending at link `end`,
    /// rotating as needed, then syncs and updates the head file.
    pub fn append(
        &mut self,
        lines: &[String],
        first_seq: u64,
        end: &Link,
    ) -> Result<(), AuditError> {
        let result = self.try_append(lines, first_seq, end);
        match result {
            // Unknown state makes the next lock read the files again.
            Ok(()) => self.left = self.current().ok().flatten(),
            Err(_) => {
                self.open = None;
                self.interrupted = true;
            }
        }
        result
    }

    fn try_append(
        &mut self,
        lines: &[String],
        first_seq: u64,
        end: &Link,
    ) -> Result<(), AuditError> {
        self.ensure_open()?;
        let skip = if self.interrupted {
            self.lines_present(lines, first_seq)?
        } else {
            0
        };
        self.interrupted = false;
        let mut buf: Vec<u8> = Vec::new();
        for line in &lines[skip..] {
            let need = line.len() as u64 + 1;
            let size = self.open.as_ref().map_or(0, |o| o.size) + buf.len() as u64;
            if size > 0 && size + need > self.max_bytes {
                self.write_out(&mut buf)?;
                self.rotate()?;
                self.ensure_open()?;
            }
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
        }
        self.write_out(&mut buf)?;
        write_head(&self.head, end).map_err(|e| AuditError::io(&self.head, e))
    }

    /// How many leading `lines` already reached the live file in a failed
    /// append (its last line is one of them).
    fn lines_present(&self, lines: &[String], first_seq: u64) -> Result<usize, AuditError> {
        let Some(last) = self.last_line(&self.path)? else {
            return Ok(0);
        };
        let link = link_of(&last);
        let Some(index) = link.seq.checked_sub(first_seq).map(|i| i as usize) else {
            return Ok(0);
        };
        let matches = lines
            .get(index)
            .is_some_and(|l| hash_line(l.as_bytes()) == link.hash);
        Ok(if matches { index + 1 } else { 0 })
    }

    fn write_out(&mut self, buf: &mut Vec<u8>) -> Result<(), AuditError> {
        let open = self.ensure_open()?;
        let written = open
            .file
            .write_all(buf)
            .and_then(|()| open.file.sync_data());
        if written.is_ok() {
            open.size += buf.len() as u64;
        }
        buf.clear();
        written.map_err(|e| AuditError::io(&self.path, e))
    }

    /// The open live file; reopened when it was never opened, failed, or
    /// was removed or replaced behind our back.
    fn ensure_open(&mut self) -> Result<&mut OpenFile, AuditError> {
        let current = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if self
            .open
            .as_ref()
            .is_some_and(|o| Some(o.identity) != current)
        {
            tracing::warn!(path = %self.path.display(), "audit log file was removed or replaced; reopening");
            self.open = None;
        }
        if self.open.is_none() {
            self.open = Some(open_live(&self.path).map_err(|e| AuditError::io(&self.path, e))?);
        }
        self.open
            .as_mut()
            .ok_or_else(|| AuditError::io(&self.path, std::io::ErrorKind::NotFound.into()))
    }

    fn rotate(&mut self) -> Result<(), AuditError> {
        self.open = None;
        if self.keep == 0 {
            return std::fs::remove_file(&self.path).map_err(|e| AuditError::io(&self.path, e));
        }
        let oldest = rotated_path(&self.path, self.keep);
        match std::fs::remove_file(&oldest) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(AuditError::io(oldest, e))
            }
            _ => {}
        }
        for n in (1..self.keep).rev() {
            let from = rotated_path(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, rotated_path(&self.path, n + 1))
                    .map_err(|e| AuditError::io(&from, e))?;
            }
        }
        std::fs::rename(&self.path, rotated_path(&self.path, 1))
            .map_err(|e| AuditError::io(&self.path, e))
    }

    fn last_line(&self, path: &Path) -> Result<Option<Vec<u8>>, AuditError> {
        last_line(path).map_err(|e| AuditError::io(path, e))
    }
}

/// Opens (creating) the live file for appending and cuts off a torn last
/// line left by a crash or a failed write.
fn open_live(path: &Path) -> std::io::Result<OpenFile> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)?;
    let meta = file.metadata()?;
    let mut size = meta.len();
    if size > 0 {
        let mut last = [0u8];
        file.seek(SeekFrom::Start(size - 1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            let keep = complete_prefix_len(&mut file, size)?;
            tracing::warn!(path = %path.display(), cut = size - keep, "audit log ended in a torn line; cut off");
            file.set_len(keep)?;
            size = keep;
        }
    }
    Ok(OpenFile {
        file,
        size,
        identity: (meta.dev(), meta.ino()),
    })
}

/// Length of the file up to and including its last newline.
fn complete_prefix_len(file: &mut File, size: u64) -> std::io::Result<u64> {
    let mut end = size;
    while end > 0 {
        let start = end.saturating_sub(TAIL_CHUNK);
        let mut chunk = vec![0u8; (end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        if let Some(p) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + p as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// The last complete line of a file (without its newline), reading
/// backwards in chunks; None for a missing or empty file.
pub fn last_line(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let size = file.metadata()?.len();
    let end = complete_prefix_len(&mut file, size)?;
    if end == 0 {
        return Ok(None);
    }
    let body_end = end - 1;
    let mut tail: Vec<u8> = Vec::new();
    let mut pos = body_end;
    loop {
        let start = pos.saturating_sub(TAIL_CHUNK);
        let mut chunk = vec![0u8; (pos - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
        if let Some(p) = tail[..(pos - start) as usize]
            .iter()
            .rposition(|&b| b == b'\n')
        {
            return Ok(Some(tail.split_off(p + 1)));
        }
        if start == 0 {
            return Ok(Some(tail));
        }
        pos = start;
    }
}

/// The link a record line ends at; a line that is not a record gets
/// sequence 0 (verification will point at it).
fn link_of(line: &[u8]) -> Link {
    let seq = serde_json::from_slice::<ChainFields>(line).map_or(0, |f| f.seq);
    Link {
        seq,
        hash: hash_line(line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_line_spans_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let long = "x".repeat(200_000);
        std::fs::write(&path, format!("first\n{long}\n")).unwrap();
        assert_eq!(last_line(&path).unwrap().unwrap(), long.as_bytes());
        std::fs::write(&path, "only\n").unwrap();
        assert_eq!(last_line(&path).unwrap().unwrap(), b"only");
        std::fs::write(&path, "a\nb\ntorn").unwrap();
        assert_eq!(last_line(&path).unwrap().unwrap(), b"b");
        std::fs::write(&path, "").unwrap();
        assert_eq!(last_line(&path).unwrap(), None);
    }

    #[test]
    fn opening_cuts_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "a\nb\n{\"seq\":3,").unwrap();
        let open = open_live(&path).unwrap();
        assert_eq!(open.size, 4);
        assert_eq!(std::fs::read(&path).unwrap(), b"a\nb\n");
    }

    #[test]
    fn log_files_lists_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("a.jsonl");
        for p in [rotated_path(&live, 1), rotated_path(&live, 2)] {
            std::fs::write(p, "").unwrap();
        }
        let files = log_files(&live);
        assert_eq!(
            files,
            vec![rotated_path(&live, 2), rotated_path(&live, 1), live]
        );
    }
}
