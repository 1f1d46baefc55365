//! Outgoing mail. Templates are pure ([`templates`]); mails are queued in the
//! SQLite outbox by whoever wants one sent, so nothing is lost while SMTP is
//! down.

pub mod delivery;
pub mod sender;
pub mod templates;
