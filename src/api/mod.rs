//! The local JSON API on `<runtime_dir>/api.sock`: what it returns, the server
//! that serves it and the client the CLI uses.
//!
//! The types here are the contract between daemon and CLI; changing a field
//! name breaks `status --json` users, so fields are only ever added.

pub mod client;
mod members;
pub mod server;
mod sso;

use serde::{Deserialize, Serialize};

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub uptime_seconds: u64,
    pub appliance_id: String,
    pub collective: String,
    pub config_path: String,
    pub components: Vec<Component>,
    /// The most recent reload, if any happened.
    pub last_reload: Option<ReloadOutcome>,
}

/// One part of the appliance and how it is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    pub name: String,
    pub state: ComponentState,
    /// What it is doing, or why it is not, and what to do about it.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentState {
    /// Working.
    Ok,
    /// Working, but something needs attention.
    Degraded,
    /// Not working.
    Down,
    /// Not running yet, for the reason in `detail`.
    Waiting,
}

impl ComponentState {
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentState::Ok => "ok",
            ComponentState::Degraded => "degraded",
            ComponentState::Down => "down",
            ComponentState::Waiting => "waiting",
        }
    }
}

/// The result of a SIGHUP reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadOutcome {
    /// RFC 3339, UTC.
    pub at: String,
    pub applied: bool,
    /// Why the new config was refused, or what could not apply live.
    pub message: String,
}

/// The JSON body of every error answer, with a stable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: String,
    pub message: String,
}
