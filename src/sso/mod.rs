//! Single sign-on for the apps. Today: DiscourseConnect, where the daemon
//! is Discourse's identity provider.

pub mod discourse;
pub mod service;
