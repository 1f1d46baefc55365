//! The ACME adapter (supervisor side): one order for every hostname, each
//! HTTP-01 challenge answered by a file the front door serves, a key and a
//! CSR made here with rcgen, and the issued chain and key written where the
//! front door looks. Decides nothing: [`super::decide`] said to order.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};

use super::{AcmeError, Files, Issued, write_atomic};
use crate::config::{Acme, Config};

/// How long the front door may take to serve a challenge file (it may be
/// starting, or looking for its first files).
pub const SERVED_WITHIN: Duration = Duration::from_secs(30);
/// How long the ACME server may take to validate, then to issue.
pub const VALIDATED_WITHIN: Duration = Duration::from_secs(120);

/// The account file: the credentials for one ACME directory.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    contact: Option<String>,
    credentials: AccountCredentials,
}

/// What an order did, for the log and the audit.
#[derive(Debug)]
pub struct Outcome {
    pub issued: Issued,
    /// The hostnames whose HTTP-01 challenge the front door answered (the
    /// others had a valid authorization from an earlier order).
    pub answered: Vec<String>,
    /// Whether an ACME account was registered for this order.
    pub new_account: bool,
}

/// Orders one certificate for `hosts` from `[front_door.acme]` and writes
/// it with its key for the front door. The current certificate stays in
/// place on any failure; the challenge files are removed either way.
pub async fn issue(
    config: &Config,
    acme: &Acme,
    hosts: &[String],
    now: i64,
) -> Result<Outcome, AcmeError> {
    let files = Files::new(&config.paths.state_dir, &config.paths.secrets_dir);
    let directory = acme.directory.as_str().to_owned();
    let server = |step: &'static str| {
        let directory = directory.clone();
        move |source| AcmeError::Server {
            directory: directory.clone(),
            step,
            source,
        }
    };
    let http = super::http::Client::new(acme.ca_file.as_deref())?;
    let (account, new_account) = account(&files, acme, http).await?;
    let mut hosts = hosts.to_vec();
    hosts.sort();
    hosts.dedup();
    let identifiers: Vec<Identifier> = hosts.iter().cloned().map(Identifier::Dns).collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(server("creating the order"))?;

    let door = loopback(config.front_door.http.0);
    let mut answers = Answers {
        dir: files.challenges.clone(),
        tokens: Vec::new(),
    };
    let mut answered = Vec::new();
    {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(server("reading an authorization"))?;
            let host = authz.identifier().to_string();
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(AcmeError::Validation {
                        directory,
                        details: format!("{host} (its authorization is {other:?})"),
                    });
                }
            }
            let mut challenge =
                authz
                    .challenge(ChallengeType::Http01)
                    .ok_or_else(|| AcmeError::NoHttp01 {
                        directory: directory.clone(),
                        host: host.clone(),
                    })?;
            // The token names a file: a server's token with `/` or `..`
            // must not write outside the challenge directory.
            if !super::is_token(&challenge.token) {
                return Err(AcmeError::BadToken {
                    directory,
                    token: challenge.token.clone(),
                });
            }
            let key_authorization = challenge.key_authorization();
            answers.publish(&challenge.token, key_authorization.as_str())?;
            served(door, &host, &challenge.token, key_authorization.as_str()).await?;
            challenge
                .set_ready()
                .await
                .map_err(server("answering a challenge"))?;
            answered.push(host);
        }
    }

    let retry = RetryPolicy::new()
        .initial_delay(Duration::from_millis(500))
        .backoff(1.5)
        .timeout(VALIDATED_WITHIN);
    let status = match order.poll_ready(&retry).await {
        Ok(s) => s,
        Err(instant_acme::Error::Api(problem)) => {
            let details = why_invalid(&mut order)
                .await
                .unwrap_or_else(|| problem.to_string());
            return Err(AcmeError::Validation { directory, details });
        }
        Err(e) => return Err(server("waiting for validation")(e)),
    };
    if status != OrderStatus::Ready {
        let details = why_invalid(&mut order)
            .await
            .unwrap_or_else(|| format!("{} (the order is {status:?})", hosts.join(", ")));
        return Err(AcmeError::Validation { directory, details });
    }
    drop(answers);

    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(hosts.clone())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key)?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(server("finalizing the order"))?;
    let chain = order
        .poll_certificate(&retry)
        .await
        .map_err(server("fetching the certificate"))?;
    let key_pem = key.serialize_pem();

    let unusable = |message: String| AcmeError::Certificate {
        directory: directory.clone(),
        message,
    };
    let (not_before, not_after) = super::leaf_validity(chain.as_bytes()).map_err(unusable)?;
    // The pair must load as the front door loads it.
    let pem = crate::frontdoor::ca::pair_pem(&chain, &key_pem);
    crate::frontdoor::proxy::server_config(&files.pair, pem.as_bytes())
        .map_err(|e| unusable(e.to_string()))?;
    // One file, one rename: a crash leaves the old pair or this one.
    write_atomic(&files.pair, pem.as_bytes(), crate::frontdoor::ca::PAIR_MODE)?;
    Ok(Outcome {
        issued: Issued {
            directory,
            hosts,
            not_before,
            not_after,
            issued_at: now,
        },
        answered,
        new_account,
    })
}

/// The account for this directory: read from its file, or registered once
/// and written 0600. A contact that changed in the config is sent to the
/// server.
async fn account(
    files: &Files,
    acme: &Acme,
    http: super::http::Client,
) -> Result<(Account, bool), AcmeError> {
    let directory = acme.directory.as_str();
    let contact = acme.contact.as_ref().map(|e| format!("mailto:{e}"));
    let server = |step: &'static str| {
        move |source| AcmeError::Server {
            directory: directory.to_owned(),
            step,
            source,
        }
    };
    let record = |message: String| AcmeError::Record {
        path: files.account.clone(),
        message,
    };
    let bytes = match std::fs::read(&files.account) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(AcmeError::Io {
                what: "reading",
                path: files.account.clone(),
                source,
            });
        }
    };
    let stored: Option<StoredAccount> = bytes
        .as_deref()
        .map(serde_json::from_slice)
        .transpose()
        .map_err(|e| record(e.to_string()))?;
    // An account belongs to one server: another directory (staging to
    // production) registers anew, replacing the file.
    if let Some(stored) = stored.filter(|s| s.directory == directory) {
        let known = stored.contact.clone();
        let account = Account::builder_with_http(Box::new(http))
            .from_credentials(stored.credentials)
            .await
            .map_err(server("reading the directory"))?;
        if known != contact {
            let list: Vec<&str> = contact.iter().map(String::as_str).collect();
            account
                .update_contacts(&list)
                .await
                .map_err(server("updating the account's contact"))?;
            let mut value: serde_json::Value =
                serde_json::from_slice(bytes.as_deref().unwrap_or_default())
                    .map_err(|e| record(e.to_string()))?;
            value["contact"] = serde_json::json!(contact);
            let bytes = serde_json::to_vec_pretty(&value).map_err(|e| record(e.to_string()))?;
            write_atomic(&files.account, &bytes, 0o600)?;
        }
        return Ok((account, false));
    }
    let list: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = Account::builder_with_http(Box::new(http))
        .create(
            &NewAccount {
                contact: &list,
                // Configuring [front_door.acme] agrees to the CA's terms
                // (said in the example config).
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory.to_owned(),
            None,
        )
        .await
        .map_err(server("registering an account"))?;
    let stored = StoredAccount {
        directory: directory.to_owned(),
        contact,
        credentials,
    };
    let bytes = serde_json::to_vec_pretty(&stored).map_err(|e| record(e.to_string()))?;
    write_atomic(&files.account, &bytes, 0o600)?;
    Ok((account, true))
}

/// The challenge files of one order, removed when it ends, failed or not.
struct Answers {
    dir: PathBuf,
    tokens: Vec<String>,
}

impl Answers {
    fn publish(&mut self, token: &str, key_authorization: &str) -> Result<(), AcmeError> {
        write_atomic(&self.dir.join(token), key_authorization.as_bytes(), 0o644)?;
        self.tokens.push(token.to_owned());
        Ok(())
    }
}

impl Drop for Answers {
    fn drop(&mut self) {
        for token in &self.tokens {
            let _ = std::fs::remove_file(self.dir.join(token));
        }
    }
}

/// Where to reach the front door's plain-HTTP listener from this box.
pub fn loopback(listen: SocketAddr) -> SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, listen.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, listen.port()).into(),
        _ => listen,
    }
}

/// Waits until the front door serves `expected` for `token` to `host`, as
/// the ACME server will ask: a front door that is down or starting fails
/// here with a clear message rather than as a failed validation, which
/// would cost an authorization.
async fn served(
    door: SocketAddr,
    host: &str,
    token: &str,
    expected: &str,
) -> Result<(), AcmeError> {
    let path = format!("{}{token}", super::CHALLENGE_PREFIX);
    let until = Instant::now() + SERVED_WITHIN;
    loop {
        let last =
            match crate::http::request(door, "GET", host, &path, &[], None, Duration::from_secs(5))
                .await
            {
                Ok((200, body)) if body.as_ref() == expected.as_bytes() => return Ok(()),
                Ok((200, _)) => "another answer than the key authorization".to_owned(),
                Ok((code, _)) => format!("HTTP {code}"),
                Err(e) => e.to_string(),
            };
        if Instant::now() >= until {
            return Err(AcmeError::NotServed {
                host: host.to_owned(),
                addr: door,
                message: last,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the ACME server said about each failed challenge.
async fn why_invalid(order: &mut instant_acme::Order) -> Option<String> {
    let mut details = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        let Ok(state) = authz.refresh().await else {
            continue;
        };
        let host = state.identifier().to_string();
        for c in &state.challenges {
            if let Some(problem) = &c.error {
                let said = problem
                    .detail
                    .clone()
                    .unwrap_or_else(|| problem.to_string());
                details.push(format!("{host}: {said}"));
            }
        }
    }
    (!details.is_empty()).then(|| details.join("; "))
}
