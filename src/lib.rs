//! pgveil: a privacy-view SQL proxy for PostgreSQL CRM databases.
//!
//! The layout follows the path of one query: `protocol` frames messages,
//! `session` runs one client connection, `rewrite` maps table references to
//! the privacy views of the session's view set, `backend` logs in to
//! PostgreSQL. `policy` and `views` turn the TOML policy into DDL.

pub mod cluster;
pub mod crm;
pub mod rewrite;
