//! Onboarding: registration, validation by the collective's admins, and the
//! links that let a person in. The decisions are pure ([`machine`],
//! [`validate`], [`ratelimit`]); the service around them is built on these.

pub mod machine;
pub mod members;
pub mod membership;
pub mod profile;
pub mod ratelimit;
pub mod service;
pub mod sweep;
pub mod validate;
