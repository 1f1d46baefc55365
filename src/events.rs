//! The appliance's event bus: services announce what happened, the tasks
//! that care subscribe. Nobody wakes a task by hand.
//!
//! One tokio `broadcast` channel of [`CAPACITY`] events. Every subscriber
//! sees every event after it subscribed, and picks the ones it cares about
//! ([`Subscriber::next`]).
//!
//! Lag policy: a subscriber that falls more than [`CAPACITY`] events
//! behind loses the oldest ones. It is told so ([`Subscriber::next`]
//! returns `None`) and must treat that as "something I care about may
//! have happened": re-read what it works from (the store, the config, the
//! observations) as if woken. Events carry no data a task could not read
//! again, so a lost event costs a needless look, never a missed change.
//! For the same reason a task subscribes *before* it first reads what it
//! works from.

use tokio::sync::broadcast;

use crate::config::ConfigDiff;

/// How many events a subscriber may fall behind before it lags.
pub const CAPACITY: usize = 256;

/// Something that happened, as its author announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The config was reloaded; the sections that changed (empty when the
    /// file did not change: a reload still retries what waits).
    ConfigReloaded(ConfigDiff),
    /// A mail was queued in the outbox.
    MailQueued,
    /// Access changes were queued for the apps (`apps::access`).
    AppActionsQueued,
    /// A collective was created: its group folder and forum group come
    /// with the next reconcile.
    CollectiveCreated,
    /// An admin asked for a reconcile now.
    ReconcileAsked,
    /// Docker reported one of our containers dying or going away (its
    /// action: `die`, `destroy`, …).
    ContainerChanged(String),
    /// A reconcile run left the apps as the config wants them (the apps'
    /// bridge may have appeared).
    AppsReconciled,
    /// Local changes were queued for the alliance.
    FederationQueued,
    /// An admin confirmed a held refresh's deletions.
    DeletionsConfirmed,
    /// The box joined an alliance.
    AllianceJoined,
}

/// The bus. Cheap to clone: every clone publishes on the same channel.
#[derive(Debug, Clone)]
pub struct Bus(broadcast::Sender<Event>);

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

impl Bus {
    pub fn new() -> Self {
        Self(broadcast::channel(CAPACITY).0)
    }

    /// Announces `event` to every subscriber; nobody listening is fine.
    pub fn publish(&self, event: Event) {
        log::debug!("event: {event:?}");
        let _ = self.0.send(event);
    }

    /// A subscriber that sees every event published from now on.
    pub fn subscribe(&self) -> Subscriber {
        Subscriber(self.0.subscribe())
    }
}

/// One task's view of the bus.
#[derive(Debug)]
pub struct Subscriber(broadcast::Receiver<Event>);

impl Subscriber {
    /// The next event `wanted` accepts, or `None` when this subscriber fell
    /// behind and lost events (see the lag policy above: re-read). Waits
    /// for ever once every [`Bus`] is gone. Cancel-safe: use it in
    /// `select!`.
    pub async fn next(&mut self, wanted: impl Fn(&Event) -> bool) -> Option<Event> {
        loop {
            match self.0.recv().await {
                Ok(e) if wanted(&e) => return Some(e),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    log::debug!("a subscriber lost {n} events; it reads everything again");
                    return None;
                }
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_see_what_they_want_after_they_subscribed() {
        let bus = Bus::new();
        bus.publish(Event::MailQueued); // before anyone listens: lost
        let mut mail = bus.subscribe();
        let mut apps = bus.subscribe();
        bus.clone().publish(Event::CollectiveCreated);
        bus.publish(Event::MailQueued);
        bus.publish(Event::AppActionsQueued);
        assert_eq!(
            mail.next(|e| *e == Event::MailQueued).await,
            Some(Event::MailQueued)
        );
        assert_eq!(
            apps.next(|e| matches!(e, Event::AppActionsQueued)).await,
            Some(Event::AppActionsQueued)
        );
        // Nothing more for the mail task.
        let more = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            mail.next(|e| *e == Event::MailQueued),
        )
        .await;
        assert!(more.is_err(), "{more:?}");
    }

    #[tokio::test]
    async fn a_lagging_subscriber_is_told_to_read_again() {
        let bus = Bus::new();
        let mut slow = bus.subscribe();
        for _ in 0..=CAPACITY {
            bus.publish(Event::ReconcileAsked);
        }
        // Whatever it wants, it learns it missed events…
        assert_eq!(slow.next(|_| false).await, None);
        // …then carries on with what is still there.
        assert_eq!(
            slow.next(|e| *e == Event::ReconcileAsked).await,
            Some(Event::ReconcileAsked)
        );
    }

    #[tokio::test]
    async fn a_diff_travels_with_the_reload() {
        let bus = Bus::new();
        let mut rx = bus.subscribe();
        let diff = ConfigDiff {
            alliance: true,
            ..ConfigDiff::default()
        };
        bus.publish(Event::ConfigReloaded(diff));
        match rx.next(|e| matches!(e, Event::ConfigReloaded(_))).await {
            Some(Event::ConfigReloaded(d)) => assert_eq!(d.changed(), ["alliance"]),
            other => panic!("{other:?}"),
        }
    }
}
