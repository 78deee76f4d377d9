//! Where one session's statements go: the backend login role and the
//! rewriting that applies to its view set.

use crate::backend::Login;
use crate::rewrite::Verdict;

/// The backend role a session logs in as and how its SQL is rewritten.
#[derive(Debug, Clone)]
pub struct Route {
    /// The proxy user.
    pub user: String,
    /// Name of the view set (or "admin" / "passthrough").
    pub view_set: String,
    /// Backend credentials for this view set.
    pub login: Login,
    /// Whether the session may change `search_path`, `role` and similar
    /// settings at startup (only the administrator).
    pub privileged: bool,
}

impl Route {
    /// Decides what happens to one statement text.
    pub fn rewrite(&self, _sql: &str) -> Verdict {
        Verdict::Forward
    }
}
