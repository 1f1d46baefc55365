//! The local directory: slapd's tree, schema and config (pure, in [`tree`]),
//! and the adapters that run slapd ([`slapd`]) and talk LDAP to it
//! ([`ldap`]). Only this module talks LDAP.

pub mod alliance;
pub mod auth;
pub mod check;
pub mod ldap;
pub mod people;
pub mod secret;
pub mod slapd;
pub mod supervisor;
pub mod tls;
pub mod tree;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("`{name}` not found: install it with `apt install slapd ldap-utils`")]
    MissingProgram { name: &'static str },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error(
        "port {ports} (directory.listen) is already in use: find the owner with `ss -ltnp`, or change directory.listen in the config"
    )]
    PortBusy { ports: String },
    #[error("slapd did not start ({status}): {log}")]
    StartFailed { status: String, log: String },
    #[error("slapd started but does not answer on {}", socket.display())]
    NotAnswering { socket: PathBuf },
    #[error("LDAP {what}: {source}")]
    Ldap {
        what: String,
        // Boxed: ldap3's error is large and this enum travels everywhere.
        source: Box<ldap3::LdapError>,
    },
}
