//! pgveil: a privacy-view SQL proxy for PostgreSQL CRM databases.
//!
//! The layout follows the path of one query: `protocol` frames messages,
//! `session` runs one client connection, `rewrite` maps table references to
//! the privacy views of the session's view set, `backend` logs in to
//! PostgreSQL. `policy` and `views` turn the TOML policy into DDL.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod backend;
pub mod cluster;
pub mod config;
pub mod control;
pub mod crm;
pub mod demo;
pub mod policy;
pub mod portal;
pub mod protocol;
pub mod report;
pub mod rewrite;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod subject;
pub mod views;
