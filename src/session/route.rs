//! Where one session's statements go: the backend login role and the
//! rewriting that applies to its view set.

use std::sync::Arc;

use crate::backend::Login;
use crate::config::PoolMode;
use crate::rewrite::{Rewriter, Target, Verdict};

/// The backend role a session logs in as and how its SQL is rewritten.
#[derive(Clone)]
pub struct Route {
    /// The proxy user.
    pub user: String,
    /// The purpose the view set serves, if the policy declares one.
    pub purpose: Option<String>,
    /// Name of the view set (or "admin" / "passthrough").
    pub view_set: String,
    /// Backend credentials for this view set.
    pub login: Login,
    /// How the session shares backend connections.
    pub pool_mode: PoolMode,
    /// Whether simple-protocol queries may run as prepared statements.
    pub auto_prepare: bool,
    /// Whether the session may change `search_path`, `role` and similar
    /// settings at startup (only the administrator).
    pub privileged: bool,
    /// The rewriter and this session's target; None without a policy.
    pub rewriter: Option<(Arc<Rewriter>, Target)>,
}

impl Route {
    /// Decides what happens to one statement text.
    pub fn rewrite(&self, sql: &str) -> Verdict {
        match &self.rewriter {
            Some((rewriter, target)) => rewriter.rewrite(target, sql),
            None => Verdict::Forward,
        }
    }
}
