//! The `mail` task (adapter): sends what the outbox holds, as soon as a
//! mail is queued ([`Event::MailQueued`]) and every 10 s; a reload makes
//! every queued mail due at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Live;
use crate::events::{Bus, Event};
use crate::metrics::Metrics;
use crate::status::MailObservation;
use crate::store::{Store, with_store};

/// Sends queued mail whenever there is some and SMTP is configured; failed
/// mails are retried with backoff (`mail::sender::retry_delay_secs`). Nothing
/// is dropped: a mail leaves the outbox only once the server took it.
pub async fn run(
    config: Live,
    store: Arc<Mutex<Store>>,
    events: Bus,
    report: watch::Sender<MailObservation>,
    metrics: Arc<Metrics>,
    token: CancellationToken,
) {
    use crate::mail::sender::{Sender, retry_delay_secs};
    use crate::onboarding::validate::Language;
    let set = |f: &dyn Fn(&mut MailObservation)| {
        report.send_modify(|m| f(m));
    };
    let mut heard = events.subscribe();
    loop {
        let config = config.get();
        let sender = match &config.smtp {
            None => {
                set(&|m| m.configured = false);
                None
            }
            Some(smtp) => match Sender::new(smtp) {
                Ok(s) => {
                    set(&|m| m.configured = true);
                    Some(s)
                }
                Err(e) => {
                    let msg = e.to_string();
                    set(&|m| {
                        m.configured = true;
                        m.last_error = Some(msg.clone());
                    });
                    None
                }
            },
        };
        if let Some(sender) = &sender {
            let now = crate::clock::unix_now();
            let due = with_store(&store, |s| s.due_mail(now, 50)).unwrap_or_default();
            for m in due {
                let params: serde_json::Value = serde_json::from_str(&m.params).unwrap_or_default();
                let lang = Language::parse(&m.language).unwrap_or_default();
                let Some(rendered) = crate::mail::templates::render(&m.template, lang, &params)
                else {
                    log::error!(task = "mail"; "mail {} has unknown template {}; dropping it", m.id, m.template);
                    let _ = with_store(&store, |s| s.mail_sent(m.id, now));
                    continue;
                };
                match sender.send(&m.recipient, &rendered).await {
                    Ok(()) => {
                        let _ = with_store(&store, |s| s.mail_sent(m.id, now));
                        set(&|o| {
                            o.sent += 1;
                            o.last_error = None;
                        });
                        metrics.mail_sent.inc();
                        log::info!(task = "mail"; "sent {} to {}", m.template, m.recipient);
                    }
                    Err(e) => {
                        let retry = now + retry_delay_secs(m.attempts);
                        let msg = e.to_string();
                        let _ = with_store(&store, |s| s.mail_failed(m.id, &msg, retry));
                        log::warn!(task = "mail"; "{msg}; retrying in {} s", retry - now);
                        set(&|o| o.last_error = Some(msg.clone()));
                        metrics.mail_send_failures.inc();
                        // The server is likely down for the rest too.
                        break;
                    }
                }
            }
        }
        tokio::select! {
            _ = token.cancelled() => return,
            event = heard.next(|e| matches!(e, Event::MailQueued | Event::ConfigReloaded(_))) => {
                if !matches!(event, Some(Event::MailQueued)) {
                    // A reload (or events missed, which may have been one):
                    // the server may be fixed, so what failed is tried now.
                    let now = crate::clock::unix_now();
                    if let Err(e) = with_store(&store, |s| s.mail_retry_now(now)) {
                        log::warn!(task = "mail"; "cannot reschedule queued mail: {e}");
                    }
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}
