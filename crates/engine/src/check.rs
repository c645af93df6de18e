//! [`Check`]: one finding of a plan or a validation (pass, warn or fail, with what to do).
//! The plan, validate and the sync preflight all report in it.

use serde::{Deserialize, Serialize};

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Fine.
    Pass,
    /// Works, but the user should know.
    Warn,
    /// Stops a copy.
    Fail,
}

/// One check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// What was checked, e.g. `target database "app"`.
    pub name: String,
    /// The outcome.
    pub status: CheckStatus,
    /// What was found.
    pub detail: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl Check {
    /// A passing check.
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check { name: name.into(), status: CheckStatus::Pass, detail: detail.into(), hint: None }
    }
    /// A warning.
    pub fn warn(name: impl Into<String>, detail: impl Into<String>, hint: Option<String>) -> Check {
        Check { name: name.into(), status: CheckStatus::Warn, detail: detail.into(), hint }
    }
    /// A failure.
    pub fn fail(name: impl Into<String>, detail: impl Into<String>, hint: Option<String>) -> Check {
        Check { name: name.into(), status: CheckStatus::Fail, detail: detail.into(), hint }
    }
}
