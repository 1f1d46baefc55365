//! Sliding-window rate limits for registrations, password resets and
//! sign-ins, per client address and per account or mail. Pure: the caller
//! passes the time; state lives in the value.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

/// The key a client address is limited by: an IPv4 address as is, an IPv6
/// address by its /64 (one household, phone or server gets a whole /64 and
/// can pick any address in it, so a per-address limit on the full address
/// would be no limit). IPv4-mapped IPv6 counts as the IPv4 address.
/// Anything that is not an address (a local caller) is its own key.
pub fn address_key(ip: &str) -> String {
    match ip.trim().parse::<IpAddr>().map(|a| a.to_canonical()) {
        Ok(IpAddr::V4(a)) => a.to_string(),
        Ok(IpAddr::V6(a)) => {
            let s = a.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{net}/64")
        }
        Err(_) => ip.to_owned(),
    }
}

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

    /// Takes back one event recorded at `at` (an attempt that turned out
    /// not to count, e.g. a sign-in that succeeded).
    pub fn undo(&mut self, key: &str, at: i64) {
        if let Some(q) = self.seen.get_mut(key)
            && let Some(i) = q.iter().rposition(|t| *t == at)
        {
            q.remove(i);
            if q.is_empty() {
                self.seen.remove(key);
            }
        }
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
    fn undo_gives_back_one_event() {
        let mut l = Limiter::new(2, 60);
        l.hit("a", 10).unwrap();
        l.hit("a", 10).unwrap();
        assert!(l.hit("a", 11).is_err());
        l.undo("a", 10);
        assert!(l.hit("a", 11).is_ok());
        assert!(l.hit("a", 11).is_err());
        l.undo("nobody", 10);
    }

    #[test]
    fn ipv6_is_keyed_by_its_64() {
        assert_eq!(address_key("192.0.2.7"), "192.0.2.7");
        assert_eq!(address_key("::ffff:192.0.2.7"), "192.0.2.7");
        let a = address_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd");
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_eq!(address_key("2001:db8:1:2::1"), a);
        assert_ne!(address_key("2001:db8:1:3::1"), a);
        assert_eq!(address_key("local"), "local");
    }

    proptest::proptest! {
        #[test]
        fn every_address_of_a_64_shares_one_key(hi: u64, lo1: u64, lo2: u64) {
            let a = std::net::Ipv6Addr::from((u128::from(hi) << 64) | u128::from(lo1));
            let b = std::net::Ipv6Addr::from((u128::from(hi) << 64) | u128::from(lo2));
            // Not IPv4-mapped (::ffff:0:0/96), which is keyed as IPv4.
            proptest::prop_assume!(a.to_ipv4_mapped().is_none() && b.to_ipv4_mapped().is_none());
            proptest::prop_assert_eq!(address_key(&a.to_string()), address_key(&b.to_string()));
        }
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
