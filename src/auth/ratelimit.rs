//! Failed-login limits (`[auth]` in pgveil.toml).
//!
//! Failures are counted in a sliding window of `window_secs`, per client
//! address and per user name (any name tried, so a refusal never tells
//! whether a user exists):
//!
//! - `max_failures` failures from one address lock that address out for
//!   `lockout_secs`: every login from it is refused before authentication
//!   starts, whatever the user and password.
//! - `max_user_failures` failures for one user name, from any addresses,
//!   throttle that name for `lockout_secs`: logins as that user are refused,
//!   except from addresses that have logged in successfully as that user
//!   before (within [`TRUSTED_FOR`]). So attackers spread over many
//!   addresses get at most `max_user_failures` guesses per window and
//!   lockout, while they cannot keep the real user out from the addresses
//!   the user works from; the throttle ends `lockout_secs` after it began.
//!
//! Refused attempts are not counted again, so a lockout always ends on time.
//! The tables are bounded: entries with nothing left to remember are
//! dropped, and past [`MAX_ENTRIES`] the stalest entry makes room.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::AuthConfig;

/// How long a successful login from an address exempts that address from
/// its user's throttle.
pub const TRUSTED_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// The most addresses, user names or trusted (address, user) pairs each
/// table remembers.
pub const MAX_ENTRIES: usize = 100_000;

/// A login refused by the limiter, and for how much longer such logins are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Time left until the lockout ends.
    pub retry_after: Duration,
}

/// Shared counts of failed logins; cheap to consult on every login.
pub struct LoginLimiter {
    state: Mutex<State>,
}

struct State {
    addresses: Counter<IpAddr>,
    users: Counter<String>,
    trusted: HashMap<(IpAddr, String), Instant>,
}

impl LoginLimiter {
    /// A limiter with the limits of `[auth]`.
    pub fn new(config: &AuthConfig) -> Self {
        let window = Duration::from_secs(config.window_secs);
        let lockout = Duration::from_secs(config.lockout_secs);
        LoginLimiter {
            state: Mutex::new(State {
                addresses: Counter::new(config.max_failures, window, lockout),
                users: Counter::new(config.max_user_failures, window, lockout),
                trusted: HashMap::new(),
            }),
        }
    }

    /// Whether a login as `user` from `ip` may try to authenticate now.
    pub fn check(&self, ip: IpAddr, user: &str, now: Instant) -> Result<(), Refused> {
        let state = self.lock();
        if let Some(left) = state.addresses.locked_for(&ip, now) {
            return Err(Refused { retry_after: left });
        }
        let trusted = state
            .trusted
            .get(&(ip, user.to_owned()))
            .is_some_and(|&since| now.saturating_duration_since(since) < TRUSTED_FOR);
        match state.users.locked_for(&user.to_owned(), now) {
            Some(left) if !trusted => Err(Refused { retry_after: left }),
            _ => Ok(()),
        }
    }

    /// Counts a failed authentication as `user` from `ip`.
    pub fn record_failure(&self, ip: IpAddr, user: &str, now: Instant) {
        let mut state = self.lock();
        state.addresses.fail(ip, now);
        state.users.fail(user.to_owned(), now);
    }

    /// Remembers that `ip` logged in as `user`, exempting it from that
    /// user's throttle. Failures already counted stay counted.
    pub fn record_success(&self, ip: IpAddr, user: &str, now: Instant) {
        let mut state = self.lock();
        if state.trusted.len() >= MAX_ENTRIES {
            state
                .trusted
                .retain(|_, since| now.saturating_duration_since(*since) < TRUSTED_FOR);
            evict_oldest(&mut state.trusted, |since| *since);
        }
        state.trusted.insert((ip, user.to_owned()), now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Removes the entry whose `age_key` is oldest.
fn evict_oldest<K: Hash + Eq + Clone, V>(map: &mut HashMap<K, V>, age_key: impl Fn(&V) -> Instant) {
    if let Some(key) = map
        .iter()
        .min_by_key(|(_, v)| age_key(v))
        .map(|(k, _)| k.clone())
    {
        map.remove(&key);
    }
}

/// Recent failures of one key and the end of its lockout.
#[derive(Default)]
struct Window {
    failures: VecDeque<Instant>,
    locked_until: Option<Instant>,
}

impl Window {
    fn last_event(&self) -> Option<Instant> {
        self.failures.back().copied().max(self.locked_until)
    }
}

/// Sliding-window failure counts with lockouts, for one kind of key.
struct Counter<K> {
    limit: usize,
    window: Duration,
    lockout: Duration,
    entries: HashMap<K, Window>,
}

impl<K: Hash + Eq + Clone> Counter<K> {
    /// `limit` failures in `window` lock a key for `lockout` (0: no limit).
    fn new(limit: u32, window: Duration, lockout: Duration) -> Self {
        Counter {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            window,
            lockout,
            entries: HashMap::new(),
        }
    }

    /// Time left on the key's lockout, if it is locked.
    fn locked_for(&self, key: &K, now: Instant) -> Option<Duration> {
        let until = self.entries.get(key)?.locked_until?;
        (until > now).then(|| until - now)
    }

    /// Counts a failure; the `limit`-th within the window starts a lockout.
    fn fail(&mut self, key: K, now: Instant) {
        if self.limit == 0 || self.locked_for(&key, now).is_some() {
            return;
        }
        self.make_room(&key, now);
        let window = self.window;
        let entry = self.entries.entry(key).or_default();
        while entry
            .failures
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= window)
        {
            entry.failures.pop_front();
        }
        entry.failures.push_back(now);
        if entry.failures.len() >= self.limit {
            entry.failures.clear();
            entry.locked_until = Some(now + self.lockout);
        }
    }

    /// Keeps the table under [`MAX_ENTRIES`] before `key` is added.
    fn make_room(&mut self, key: &K, now: Instant) {
        if self.entries.len() < MAX_ENTRIES || self.entries.contains_key(key) {
            return;
        }
        let (window, lockout) = (self.window, self.lockout);
        self.entries.retain(|_, w| {
            w.last_event()
                .is_some_and(|t| now.saturating_duration_since(t) < window.max(lockout))
        });
        if self.entries.len() >= MAX_ENTRIES {
            evict_oldest(&mut self.entries, |w| w.last_event().unwrap_or(now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATTACKER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 66));
    const OFFICE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));

    fn limiter(max_failures: u32, max_user_failures: u32) -> LoginLimiter {
        LoginLimiter::new(&AuthConfig {
            max_failures,
            max_user_failures,
            window_secs: 60,
            lockout_secs: 30,
        })
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn address_is_locked_after_max_failures_for_the_lockout_only() {
        let l = limiter(3, 0);
        let t0 = Instant::now();
        for i in 0..2 {
            l.record_failure(ATTACKER, "sam", t0 + secs(i));
            assert_eq!(l.check(ATTACKER, "sam", t0 + secs(i)), Ok(()));
        }
        l.record_failure(ATTACKER, "other", t0 + secs(2));
        assert_eq!(
            l.check(ATTACKER, "anyone", t0 + secs(12)),
            Err(Refused {
                retry_after: secs(20)
            })
        );
        assert_eq!(l.check(OFFICE, "sam", t0 + secs(12)), Ok(()));
        assert_eq!(l.check(ATTACKER, "sam", t0 + secs(32)), Ok(()));
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let l = limiter(3, 0);
        let t0 = Instant::now();
        l.record_failure(ATTACKER, "sam", t0);
        l.record_failure(ATTACKER, "sam", t0 + secs(30));
        l.record_failure(ATTACKER, "sam", t0 + secs(61));
        assert_eq!(l.check(ATTACKER, "sam", t0 + secs(61)), Ok(()));
        l.record_failure(ATTACKER, "sam", t0 + secs(62));
        assert!(l.check(ATTACKER, "sam", t0 + secs(62)).is_err());
    }

    #[test]
    fn user_throttle_spares_addresses_the_user_logged_in_from() {
        let l = limiter(0, 4);
        let t0 = Instant::now();
        l.record_success(OFFICE, "sam", t0);
        for i in 0..4u8 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, i));
            l.record_failure(ip, "sam", t0 + secs(1));
        }
        let fresh = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 200));
        assert!(l.check(fresh, "sam", t0 + secs(2)).is_err());
        assert!(l.check(ATTACKER, "sam", t0 + secs(2)).is_err());
        assert_eq!(l.check(OFFICE, "sam", t0 + secs(2)), Ok(()));
        assert_eq!(l.check(fresh, "ana", t0 + secs(2)), Ok(()));
        assert_eq!(l.check(fresh, "sam", t0 + secs(31)), Ok(()));
    }

    #[test]
    fn refused_attempts_do_not_extend_a_lockout() {
        let l = limiter(2, 0);
        let t0 = Instant::now();
        l.record_failure(ATTACKER, "sam", t0);
        l.record_failure(ATTACKER, "sam", t0);
        l.record_failure(ATTACKER, "sam", t0 + secs(20));
        assert_eq!(l.check(ATTACKER, "sam", t0 + secs(30)), Ok(()));
    }

    #[test]
    fn zero_disables_a_limit() {
        let l = limiter(0, 0);
        let t0 = Instant::now();
        for _ in 0..1000 {
            l.record_failure(ATTACKER, "sam", t0);
        }
        assert_eq!(l.check(ATTACKER, "sam", t0), Ok(()));
    }

    #[test]
    fn tables_stay_bounded() {
        let mut c: Counter<u32> = Counter::new(5, secs(60), secs(30));
        let t0 = Instant::now();
        for key in 0..(MAX_ENTRIES as u32 + 10) {
            c.fail(key, t0);
        }
        assert!(c.entries.len() <= MAX_ENTRIES);
    }
}
