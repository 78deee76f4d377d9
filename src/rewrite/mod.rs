//! SQL rewriting: parse a statement, refuse what may not run, and map each
//! reference to a protected table onto the view of the session's view set.

/// Why a statement was refused; becomes an ErrorResponse at the protocol edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// SQLSTATE, e.g. `42501` (insufficient privilege) or `0A000` (not supported).
    pub sqlstate: &'static str,
    /// Primary message shown to the user.
    pub message: String,
    /// What the user can do instead.
    pub hint: Option<String>,
}

/// The outcome of rewriting one Query or Parse text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the original bytes unchanged.
    Forward,
    /// Forward this SQL text instead.
    Rewritten(String),
    /// Do not forward; answer with this error.
    Refused(Refusal),
}
