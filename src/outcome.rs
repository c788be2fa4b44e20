//! What a run came to, in the words `apply --json`, `check` and the report share: each step's
//! outcome and result, the run's status, and the firewall's state as the engine last saw it.
//! Imports nothing of brickup's: the engine, the steps and the report all stand on it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Unchanged,
    Changed,
    Failed,
    Skipped,
    Deferred,
}

/// One step's result, as printed by `apply --json` and sent in the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StepResult {
    pub name: String,
    pub outcome: Outcome,
    pub duration_ms: u64,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Succeeded,
    Failed,
    Partial,
}

impl Status {
    /// A finished run's status: `failed` on an error, `partial` if any step failed or was
    /// deferred, `succeeded` otherwise. `apply --json` and the report share it.
    pub(crate) fn of(steps: &[StepResult], failed: bool) -> Status {
        let incomplete = steps
            .iter()
            .any(|s| matches!(s.outcome, Outcome::Failed | Outcome::Deferred));
        match (failed, incomplete) {
            (true, _) => Status::Failed,
            (false, true) => Status::Partial,
            (false, false) => Status::Succeeded,
        }
    }
}

/// The csf state as the engine last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firewall {
    Enforcing,
    Testing,
    Off,
    Unknown,
}
