//! Defences around client authentication that sessions share: the limiter
//! of failed logins per client address and per user name.

pub mod ratelimit;

pub use ratelimit::{LoginLimiter, Refused};
