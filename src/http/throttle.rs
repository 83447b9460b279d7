//! Throttling of failed staff logins, per email and per client address.
//!
//! A small fixed-window counter rather than `governor`: only failures count, and a success must
//! be able to clear an email's count, which a token bucket cannot express. Memory is bounded:
//! each table holds at most `max_keys` entries; expired windows are dropped first, and when every
//! window is still live the oldest one is forgotten (the per-address limit still holds).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed per email, and per client address, within one window.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_email: u32,
    pub per_ip: u32,
    pub window: Duration,
    pub max_keys: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            per_email: 5,
            per_ip: 20,
            window: Duration::from_secs(15 * 60),
            max_keys: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

#[derive(Debug, Default)]
struct Table(HashMap<String, Window>);

impl Table {
    /// Time left before `key` may try again, when it has used up `limit`.
    fn blocked_for(&self, key: &str, limit: u32, window: Duration, now: Instant) -> Option<Duration> {
        let w = self.0.get(key)?;
        let ends = w.started + window;
        (w.failures >= limit && ends > now).then(|| ends - now)
    }

    fn record(&mut self, key: &str, window: Duration, max_keys: usize, now: Instant) {
        let live = |w: &Window| now.duration_since(w.started) < window;
        if let Some(w) = self.0.get_mut(key) {
            if live(w) {
                w.failures = w.failures.saturating_add(1);
            } else {
                *w = Window {
                    started: now,
                    failures: 1,
                };
            }
            return;
        }
        if self.0.len() >= max_keys {
            self.0.retain(|_, w| live(w));
        }
        if self.0.len() >= max_keys {
            if let Some(oldest) = self.0.iter().min_by_key(|(_, w)| w.started).map(|(k, _)| k.clone()) {
                self.0.remove(&oldest);
            }
        }
        self.0.insert(
            key.to_string(),
            Window {
                started: now,
                failures: 1,
            },
        );
    }
}

#[derive(Debug, Default)]
struct Tables {
    emails: Table,
    ips: Table,
}

/// Shared by every login request (held in `AppState`).
#[derive(Debug, Default)]
pub struct LoginThrottle {
    limits: Limits,
    tables: Mutex<Tables>,
}

impl LoginThrottle {
    pub fn new(limits: Limits) -> LoginThrottle {
        LoginThrottle {
            limits,
            tables: Mutex::default(),
        }
    }

    /// Counts one login attempt against this email and address, as a failure until
    /// [`record_success`](Self::record_success) says otherwise. Checking and counting under one
    /// lock means concurrent guesses cannot all slip through before the first one is counted.
    /// `Err` holds the whole seconds to wait (at least 1) when either has used up its limit.
    pub fn try_attempt(&self, email: &str, ip: &str) -> Result<(), u64> {
        self.try_attempt_at(email, ip, Instant::now())
    }

    /// A correct password clears the email's count and takes back this attempt from the address.
    pub fn record_success(&self, email: &str, ip: &str) {
        let mut t = self.lock();
        t.emails.0.remove(email);
        if let Some(w) = t.ips.0.get_mut(ip) {
            w.failures = w.failures.saturating_sub(1);
        }
    }

    fn try_attempt_at(&self, email: &str, ip: &str, now: Instant) -> Result<(), u64> {
        let l = &self.limits;
        let mut t = self.lock();
        let wait = [
            t.emails.blocked_for(email, l.per_email, l.window, now),
            t.ips.blocked_for(ip, l.per_ip, l.window, now),
        ]
        .into_iter()
        .flatten()
        .max();
        if let Some(wait) = wait {
            return Err(wait.as_secs_f64().ceil().max(1.0) as u64);
        }
        t.emails.record(email, l.window, l.max_keys, now);
        t.ips.record(ip, l.window, l.max_keys, now);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        // The tables hold plain counters; a panic elsewhere cannot leave them inconsistent.
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(max_keys: usize) -> LoginThrottle {
        LoginThrottle::new(Limits {
            per_email: 3,
            per_ip: 5,
            window: Duration::from_secs(60),
            max_keys,
        })
    }

    #[test]
    fn an_email_is_blocked_after_its_failures_until_the_window_ends() {
        let t = throttle(100);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(t.try_attempt_at("a@x.com", "ip1", start), Ok(()));
        }
        assert_eq!(t.try_attempt_at("a@x.com", "ip2", start), Err(60));
        assert_eq!(
            t.try_attempt_at("a@x.com", "ip2", start + Duration::from_millis(59_500)),
            Err(1)
        );
        assert_eq!(
            t.try_attempt_at("b@x.com", "ip2", start),
            Ok(()),
            "other emails are not affected"
        );
        assert_eq!(
            t.try_attempt_at("a@x.com", "ip2", start + Duration::from_secs(60)),
            Ok(())
        );
    }

    #[test]
    fn an_address_is_blocked_after_failures_across_many_emails() {
        let t = throttle(100);
        let now = Instant::now();
        for i in 0..5 {
            assert_eq!(t.try_attempt_at(&format!("u{i}@x.com"), "ip1", now), Ok(()));
        }
        assert!(t.try_attempt_at("new@x.com", "ip1", now).is_err());
        assert!(t.try_attempt_at("new@x.com", "ip2", now).is_ok());
    }

    #[test]
    fn successes_do_not_count_and_clear_the_email() {
        let t = throttle(100);
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(t.try_attempt_at("a@x.com", "ip1", now), Ok(()));
            t.record_success("a@x.com", "ip1");
        }
        for _ in 0..3 {
            assert_eq!(t.try_attempt_at("b@x.com", "ip1", now), Ok(()));
        }
        t.record_success("b@x.com", "ip1");
        assert_eq!(
            t.try_attempt_at("b@x.com", "ip1", now),
            Ok(()),
            "the email count was cleared"
        );
    }

    #[test]
    fn memory_stays_bounded_whatever_the_number_of_keys() {
        let t = throttle(10);
        let now = Instant::now();
        for i in 0..1000 {
            let _ = t.try_attempt_at(
                &format!("u{i}@x.com"),
                &format!("ip{i}"),
                now + Duration::from_millis(i),
            );
        }
        let tables = t.lock();
        assert!(tables.emails.0.len() <= 10 && tables.ips.0.len() <= 10);
        assert!(tables.emails.0.contains_key("u999@x.com"), "the newest key is kept");
    }
}
