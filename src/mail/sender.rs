//! Sends queued mail over SMTP with lettre (rustls, aws-lc-rs, the system's
//! CA roots). Adapter: it sends what it is given and reports; what to send
//! and when to retry is decided elsewhere.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::templates::Rendered;
use crate::config::{Smtp, SmtpSecurity};

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("smtp.password_file {path}: {source}")]
    Password {
        path: String,
        source: std::io::Error,
    },
    #[error("smtp.from `{0}` is not a mailbox lettre accepts")]
    From(String),
    #[error("recipient `{0}` is not a mailbox")]
    To(String),
    #[error("building the mail: {0}")]
    Build(String),
    #[error("SMTP {host}:{port}: {message}")]
    Smtp {
        host: String,
        port: u16,
        message: String,
    },
}

pub struct Sender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    host: String,
    port: u16,
}

impl Sender {
    /// A sender for the `[smtp]` settings; reads the password file if any.
    pub fn new(smtp: &Smtp) -> Result<Self, MailError> {
        let host = smtp.host.as_str().to_owned();
        let smtp_err = |e: lettre::transport::smtp::Error| MailError::Smtp {
            host: host.clone(),
            port: smtp.port,
            message: e.to_string(),
        };
        let builder = match smtp.security {
            SmtpSecurity::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&host).map_err(smtp_err)?
            }
            SmtpSecurity::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host).map_err(smtp_err)?
            }
            // Only for a relay on the box or the LAN: the password would go
            // in clear, so none is sent.
            SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host),
        };
        let mut builder = builder
            .port(smtp.port)
            .timeout(Some(Duration::from_secs(20)));
        let password = match (&smtp.password, &smtp.password_file) {
            (Some(p), _) => Some(p.expose().to_owned()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(&**path)
                    .map_err(|source| MailError::Password {
                        path: path.display().to_string(),
                        source,
                    })?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        if let (Some(user), Some(pw), false) = (
            &smtp.username,
            password,
            smtp.security == SmtpSecurity::None,
        ) {
            builder = builder.credentials(Credentials::new(user.clone(), pw));
        }
        let from: Mailbox = smtp
            .from
            .as_str()
            .parse()
            .map_err(|_| MailError::From(smtp.from.to_string()))?;
        Ok(Self {
            transport: builder.build(),
            from,
            host,
            port: smtp.port,
        })
    }

    /// Sends one mail, text and HTML alternatives.
    pub async fn send(&self, to: &str, mail: &Rendered) -> Result<(), MailError> {
        let to: Mailbox = to.parse().map_err(|_| MailError::To(to.to_owned()))?;
        let msg = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&mail.subject)
            .multipart(MultiPart::alternative_plain_html(
                mail.text.clone(),
                mail.html.clone(),
            ))
            .map_err(|e| MailError::Build(e.to_string()))?;
        self.transport
            .send(msg)
            .await
            .map(drop)
            .map_err(|e| MailError::Smtp {
                host: self.host.clone(),
                port: self.port,
                message: e.to_string(),
            })
    }
}

/// Seconds to wait before the next try after `attempts` failures: 10 s
/// doubling to an hour, so a short SMTP outage costs little and a long one
/// does not hammer the server.
pub fn retry_delay_secs(attempts: i64) -> i64 {
    let n = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
    (10i64.saturating_mul(1i64 << n.min(9))).min(3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_an_hour() {
        assert_eq!(
            [0, 1, 2, 5, 9, 30].map(retry_delay_secs),
            [10, 20, 40, 320, 3600, 3600]
        );
    }
}
