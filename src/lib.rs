//! CommonsCloud appliance: the supervisor daemon and its CLI.
//!
//! See `docs/ARCHITECTURE.md` for the code map.

pub mod api;
pub mod appliance;
pub mod apps;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod directory;
pub mod docker;
pub mod doctor;
pub mod events;
pub mod federation;
pub mod frontdoor;
pub mod http;
pub mod logging;
pub mod mail;
pub mod metrics;
pub mod model;
pub mod onboarding;
pub mod reconcile;
pub mod releases;
pub mod sso;
pub mod status;
pub mod store;
pub mod sys;
pub mod tls;
pub mod token;
pub mod web;
