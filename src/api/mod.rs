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

// The status document lives with the code that fills it (`status`);
// it is part of this contract all the same.
pub use crate::status::{Component, ComponentState, ReloadOutcome, Status};

/// The JSON body of every error answer, with a stable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: String,
    pub message: String,
}
