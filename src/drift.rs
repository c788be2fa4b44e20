//! Drift as `check` finds it: one entry per thing that is not as brickup wants it. A leaf
//! module: steps and the host readers below them build entries, the engine collects them.

use serde::Serialize;

/// One piece of drift, as `check` prints it (`message`) and `check --json` gives it: what
/// drifted (`item`), what brickup wants and what is there when those are values, and who set
/// it (`source`: file:line, or sshd's default). Fields that do not apply are null.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub item: String,
    pub want: Option<String>,
    pub have: Option<String>,
    pub source: Option<String>,
    pub message: String,
}

impl Drift {
    /// Drift told in a sentence only.
    pub(crate) fn new(item: impl Into<String>, message: impl Into<String>) -> Self {
        Drift {
            item: item.into(),
            want: None,
            have: None,
            source: None,
            message: message.into(),
        }
    }
    /// Each of `messages` as drift of `item`.
    pub(crate) fn all(item: &str, messages: Vec<String>) -> Vec<Drift> {
        messages.into_iter().map(|m| Drift::new(item, m)).collect()
    }
    pub(crate) fn values(mut self, want: impl Into<String>, have: Option<String>) -> Self {
        self.want = Some(want.into());
        self.have = have;
        self
    }
    pub(crate) fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }
    /// The messages joined with "; " (for an error or a log line).
    pub(crate) fn join(drift: &[Drift]) -> String {
        drift
            .iter()
            .map(|d| d.message.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
