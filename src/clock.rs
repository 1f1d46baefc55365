//! The one clock: seconds since the Unix epoch, UTC.
//!
//! Pure modules never read the time: they take `now` as an argument (see
//! `docs/ARCHITECTURE.md`). Whoever calls them reads it here, either with
//! [`unix_now`] (adapters, tasks) or through a [`Clock`] (the appliance's
//! handle, so a test can set the time it sees).

use std::sync::atomic::{AtomicI64, Ordering};

/// Seconds since the epoch, now. A clock set before 1970 reads 0.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Where the time comes from.
pub trait Clock: Send + Sync {
    /// Seconds since the epoch.
    fn now(&self) -> i64;
}

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        unix_now()
    }
}

/// A clock that says what it was told, for tests.
#[derive(Debug, Default)]
pub struct FakeClock(AtomicI64);

impl FakeClock {
    pub fn at(unix: i64) -> Self {
        Self(AtomicI64::new(unix))
    }

    pub fn set(&self, unix: i64) {
        self.0.store(unix, Ordering::SeqCst);
    }

    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_is_past_2020_and_the_fake_one_obeys() {
        assert!(SystemClock.now() > 1_577_836_800);
        let c = FakeClock::at(100);
        assert_eq!(c.now(), 100);
        c.advance(20);
        assert_eq!(c.now(), 120);
        c.set(5);
        assert_eq!(c.now(), 5);
        let dynamic: &dyn Clock = &c;
        assert_eq!(dynamic.now(), 5);
    }
}
