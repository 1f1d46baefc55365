//! Sliding-window rate limits for registrations and password resets, per IP
//! and per email. Pure: the caller passes the time; state lives in the value.

use std::collections::{HashMap, VecDeque};

/// At most `max` events per `window_secs` for any one key.
#[derive(Debug, Clone)]
pub struct Limiter {
    max: usize,
    window_secs: i64,
    seen: HashMap<String, VecDeque<i64>>,
}

impl Limiter {
    pub fn new(max: usize, window_secs: i64) -> Self {
        Self {
            max,
            window_secs,
            seen: HashMap::new(),
        }
    }

    /// Records an event for `key` at `now`, or says how many seconds to wait.
    pub fn hit(&mut self, key: &str, now: i64) -> Result<(), i64> {
        let q = self.seen.entry(key.to_owned()).or_default();
        while q.front().is_some_and(|t| *t <= now - self.window_secs) {
            q.pop_front();
        }
        if q.len() >= self.max {
            let oldest = q.front().copied().unwrap_or(now);
            return Err(oldest + self.window_secs - now);
        }
        q.push_back(now);
        Ok(())
    }

    /// Seconds to wait before `key` may have another event, without
    /// recording one.
    pub fn blocked(&self, key: &str, now: i64) -> Option<i64> {
        let q = self.seen.get(key)?;
        let live: Vec<i64> = q
            .iter()
            .copied()
            .filter(|t| *t > now - self.window_secs)
            .collect();
        (live.len() >= self.max).then(|| live.first().map_or(0, |t| t + self.window_secs - now))
    }

    /// Forgets keys with nothing in their window, so memory stays bounded by
    /// recent activity.
    pub fn prune(&mut self, now: i64) {
        let cutoff = now - self.window_secs;
        self.seen
            .retain(|_, q| q.back().is_some_and(|t| *t > cutoff));
    }

    pub fn keys(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_each_key_within_its_window() {
        let mut l = Limiter::new(3, 3600);
        for t in 0..3 {
            assert!(l.hit("10.0.0.1", 1000 + t).is_ok());
        }
        assert_eq!(l.hit("10.0.0.1", 1010), Err(3590));
        assert!(l.hit("10.0.0.2", 1010).is_ok(), "other keys are free");
        assert!(
            l.hit("10.0.0.1", 1000 + 3600).is_ok(),
            "the oldest left the window"
        );
    }

    #[test]
    fn prune_drops_idle_keys() {
        let mut l = Limiter::new(1, 60);
        l.hit("a", 0).unwrap();
        l.hit("b", 50).unwrap();
        l.prune(70);
        assert_eq!(l.keys(), 1);
    }
}
