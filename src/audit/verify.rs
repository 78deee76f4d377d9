//! `pgveil audit verify`: checks the hash chain over log files given oldest
//! first, and the tail against the head file beside the last of them.

use std::cmp::Ordering;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::chain::{hash_line, head_path, read_head, ChainFields, Link, GENESIS};
use super::AuditError;

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records per file, in the order checked.
    pub files: Vec<(PathBuf, u64)>,
    /// Records checked before the first problem (all of them if none).
    pub records: u64,
    /// Sequence numbers of the first and last record checked.
    pub seq_range: Option<(u64, u64)>,
    /// True when the first record is the chain's very first (seq 1);
    /// false when earlier records were rotated away or not given.
    pub from_genesis: bool,
    /// The first broken record, if any.
    pub problem: Option<Problem>,
    /// What the head file says about the tail.
    pub tail: Tail,
}

/// Where and why the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub path: PathBuf,
    /// 1-based line number in it.
    pub line: u64,
    /// What is wrong.
    pub reason: String,
}

/// The tail check against the head file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// No head file beside the last file: a cut-off tail goes unnoticed.
    NoHead,
    /// The last record is the one the head file names.
    Matches(u64),
    /// The files hold records after the head (a crash between writing a
    /// batch and updating the head); not proof of tampering.
    HeadBehind {
        /// Sequence number in the head file.
        head: u64,
        /// Last sequence number in the files.
        last: u64,
    },
    /// Not checked because the chain broke earlier.
    NotChecked,
}

impl VerifyReport {
    /// True when no record was edited, removed, inserted or reordered and
    /// the tail matches the head file (when there is one).
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }
}

/// Checks the chain over `paths`, oldest first (see
/// [`crate::audit::log_files`]). Err only when a file cannot be read.
pub fn verify(paths: &[PathBuf]) -> Result<VerifyReport, AuditError> {
    let mut check = Check::default();
    for path in paths {
        check.file(path)?;
        if check.problem.is_some() {
            break;
        }
    }
    let tail = match (check.problem.is_some(), paths.last()) {
        (false, Some(last)) => check.tail(last)?,
        _ => Tail::NotChecked,
    };
    Ok(VerifyReport {
        files: check.files,
        records: check.records,
        seq_range: check.first_seq.zip(check.prev.as_ref().map(|(l, _)| l.seq)),
        from_genesis: check.from_genesis,
        problem: check.problem,
        tail,
    })
}

#[derive(Default)]
struct Check {
    files: Vec<(PathBuf, u64)>,
    records: u64,
    first_seq: Option<u64>,
    from_genesis: bool,
    /// The last good record and where it is (file, line).
    prev: Option<(Link, (PathBuf, u64))>,
    problem: Option<Problem>,
}

impl Check {
    fn file(&mut self, path: &Path) -> Result<(), AuditError> {
        let file = File::open(path).map_err(|e| AuditError::io(path, e))?;
        let mut reader = BufReader::new(file);
        let mut count = 0;
        let mut line_no = 0;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| AuditError::io(path, e))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            if let Err(reason) = self.line(&buf, (path.to_path_buf(), line_no)) {
                self.problem = Some(Problem {
                    path: path.to_path_buf(),
                    line: line_no,
                    reason,
                });
                break;
            }
            count += 1;
        }
        self.files.push((path.to_path_buf(), count));
        Ok(())
    }

    fn line(&mut self, raw: &[u8], at: (PathBuf, u64)) -> Result<(), String> {
        let Some(line) = raw.strip_suffix(b"\n") else {
            return Err("incomplete last line (torn write)".into());
        };
        let fields: ChainFields =
            serde_json::from_slice(line).map_err(|e| format!("not an audit record ({e})"))?;
        match &self.prev {
            None => self.first(&fields)?,
            Some((prev, (p, l))) => check_link(prev, &format!("{}:{l}", p.display()), &fields)?,
        }
        self.records += 1;
        self.prev = Some((
            Link {
                seq: fields.seq,
                hash: hash_line(line),
            },
            at,
        ));
        Ok(())
    }

    fn first(&mut self, fields: &ChainFields) -> Result<(), String> {
        self.first_seq = Some(fields.seq);
        self.from_genesis = fields.seq == 1;
        match (fields.seq, fields.prev_hash == GENESIS) {
            (0, _) => Err("sequence number 0 is never written".into()),
            (1, false) => {
                Err("record 1 does not start the chain (prev_hash is not the genesis hash)".into())
            }
            (s, true) if s > 1 => Err(format!("record {s} claims to start the chain")),
            _ => Ok(()),
        }
    }

    /// Compares the last record with the head file beside `last_path`;
    /// a mismatch becomes the problem.
    fn tail(&mut self, last_path: &Path) -> Result<Tail, AuditError> {
        let head_file = head_path(last_path);
        let head = read_head(&head_file).map_err(|e| AuditError::io(&head_file, e))?;
        let Some(head) = head else {
            return Ok(Tail::NoHead);
        };
        let (last, (path, line)) = match &self.prev {
            Some((link, at)) => (link.clone(), at.clone()),
            None => (Link::genesis(), (last_path.to_path_buf(), 0)),
        };
        let reason = match head.seq.cmp(&last.seq) {
            Ordering::Less => {
                return Ok(Tail::HeadBehind {
                    head: head.seq,
                    last: last.seq,
                })
            }
            Ordering::Equal if head.hash == last.hash => return Ok(Tail::Matches(head.seq)),
            Ordering::Equal => format!(
                "the last record differs from the one {} names: it was edited",
                head_file.display()
            ),
            Ordering::Greater => format!(
                "the log ends at record {} but {} names record {}: the tail was cut off",
                last.seq,
                head_file.display(),
                head.seq
            ),
        };
        self.problem = Some(Problem { path, line, reason });
        Ok(Tail::NotChecked)
    }
}

fn check_link(prev: &Link, prev_at: &str, fields: &ChainFields) -> Result<(), String> {
    if fields.seq != prev.seq + 1 {
        return Err(format!(
            "record {} follows record {} ({prev_at}); expected {}: records were removed, inserted or reordered",
            fields.seq,
            prev.seq,
            prev.seq + 1
        ));
    }
    if fields.prev_hash != prev.hash {
        return Err(format!(
            "prev_hash does not match the record before it ({prev_at}): that record was edited, or one was replaced"
        ));
    }
    Ok(())
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (path, records) in &self.files {
            writeln!(f, "{}: {records} records", path.display())?;
        }
        match (self.seq_range, &self.problem) {
            (Some((first, last)), None) => {
                writeln!(f, "records {first}..{last} ({} in all)", self.records)?
            }
            (Some((first, last)), Some(_)) => writeln!(
                f,
                "records {first}..{last} chain correctly before the break"
            )?,
            (None, _) => writeln!(f, "no records before the break or in the files")?,
        }
        if self.seq_range.is_some() && !self.from_genesis {
            writeln!(
                f,
                "note: the chain starts mid-way; earlier records were rotated away or not given"
            )?;
        }
        match &self.tail {
            Tail::NoHead => writeln!(f, "note: no head file beside the last file; a cut-off tail cannot be detected")?,
            Tail::Matches(seq) => writeln!(f, "tail: matches the head file (record {seq})")?,
            Tail::HeadBehind { head, last } => writeln!(
                f,
                "note: the head file names record {head}, the log goes on to {last} (a crash before the head was updated?)"
            )?,
            Tail::NotChecked => {}
        }
        match &self.problem {
            None => write!(f, "OK: the chain is intact"),
            Some(p) => write!(f, "BROKEN at {}:{}: {}", p.path.display(), p.line, p.reason),
        }
    }
}
