//! The privacy log: one record per statement, refused statement, failed
//! login and data-subject request, written off the data path to a
//! hash-chained JSON Lines file (and optionally the table `pgveil_audit.log`).
//!
//! The data path builds an [`AuditEvent`] and calls [`AuditHandle::record`],
//! which never waits: it pushes into a bounded channel. A background writer
//! normalizes statements (literals become `?`), finds the protected tables
//! and columns they use (with their classification, from the
//! [`TableCatalog`] the server derives from the policy), chains each record
//! to the previous one by SHA-256 and writes batches to the sinks. Several
//! processes may append to one log: batches are written under a lock and
//! continue the chain from what the others wrote. With `required = true` the handle refuses events
//! while the buffer is full or a sink is failing, so the proxy can fail
//! closed. [`verify`] checks a chain; it detects edited, removed, inserted
//! and reordered records, and a cut-off tail through the `FILE.head` file.
//!
//! Limits: the chain is an unkeyed hash, so it shows accidental or naive
//! tampering, not a rewrite of the whole log and head file by someone with
//! write access; removing the very first records of the oldest kept file
//! looks like rotation.

mod catalog;
mod chain;
mod config;
mod error;
mod event;
mod file_sink;
mod handle;
mod normalize;
mod record;
mod table_sink;
mod tag;
mod verify;
mod writer;

pub use catalog::{ProtectedColumn, ProtectedTable, TableCatalog};
pub use chain::{head_path, GENESIS};
pub use config::AuditConfig;
pub use error::{AuditError, AuditUnavailable};
pub use event::{
    new_session_id, Access, AuditEvent, AuditVerdict, ColumnAccess, EventKind, SessionInfo,
    SubjectAction, TableAccess,
};
pub use file_sink::{log_files, rotated_path};
pub use handle::{start, AuditHandle};
pub use normalize::{analyse, normalize, Normalized};
pub use tag::{rows_from_command_complete, rows_from_command_tag};
pub use verify::{verify, Problem, Tail, VerifyReport};
