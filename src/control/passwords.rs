//! Password hashing off the async runtime, and sign-in throttling.
//!
//! Argon2id costs tens of milliseconds of CPU and 19 MiB per call. Run inline it would
//! stall the runtime that also carries Raft heartbeats and gossip, so every hash and
//! verify runs on the blocking pool behind a small semaphore ([`HASHERS`] at once); the
//! rest wait their turn. An unknown user is checked against a dummy hash, so a wrong
//! name costs as much as a wrong password (no user enumeration by timing).
//!
//! [`Throttle`] counts failed sign-ins per user name and per client address, as
//! Keystone's `lockout_failure_attempts` / `lockout_duration` do: after
//! [`USER_FAILURES`] failures in a row a user name is locked for [`LOCKOUT`], after
//! [`SOURCE_FAILURES`] an address is. A locked sign-in is refused before any hash runs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use tokio::sync::Semaphore;

use super::ControlError;

/// Password hashes computed at once on a node.
pub const HASHERS: usize = 2;
/// Failed sign-ins in a row that lock a user name.
pub const USER_FAILURES: u32 = 6;
/// Failed sign-ins in a row that lock a client address (it may try several names).
pub const SOURCE_FAILURES: u32 = 20;
/// How long a lock lasts.
pub const LOCKOUT: Duration = Duration::from_secs(60);
/// Names and addresses tracked at most (the oldest are forgotten first).
const TRACKED: usize = 10_000;

static POOL: Semaphore = Semaphore::const_new(HASHERS);

/// A hash of a random password, to verify against when the user does not exist.
static DUMMY: LazyLock<String> =
    LazyLock::new(|| hash_now(&hex::encode(rand::random::<[u8; 16]>())).unwrap_or_default());

fn hash_now(password: &str) -> Result<String, ControlError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| ControlError::Invalid(format!("salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ControlError::Invalid(format!("cannot hash the password: {e}")))
}

fn verify_now(hash: Option<&str>, password: &str) -> bool {
    let dummy = hash.is_none();
    let stored = hash.unwrap_or(DUMMY.as_str());
    let ok = PasswordHash::new(stored)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false);
    ok && !dummy
}

async fn on_pool<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ControlError> {
    let _permit = POOL
        .acquire()
        .await
        .map_err(|_| ControlError::NotReady("the password pool is closed".into()))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ControlError::NotReady(format!("password check did not finish: {e}")))
}

/// Hashes a password (Argon2id) on the blocking pool.
pub async fn hash(password: &str) -> Result<String, ControlError> {
    let p = password.to_string();
    on_pool(move || hash_now(&p)).await?
}

/// Whether `password` matches `hash`; `None` (no such user) is checked against a dummy
/// hash and never matches.
pub async fn verify(hash: Option<String>, password: &str) -> Result<bool, ControlError> {
    let p = password.to_string();
    on_pool(move || verify_now(hash.as_deref(), &p)).await
}

/// Hashes synchronously: for callers already off the runtime (tests, bootstrap).
pub fn hash_blocking(password: &str) -> Result<String, ControlError> {
    hash_now(password)
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// How long a sign-in refused because its name or address is locked out waits before it
/// is answered: the answer costs nothing to compute, so without a wait a flood of them
/// runs as fast as its clients' TLS lets it and takes the CPU from everyone else. The
/// wait is a timer, not work: a client gets at most one answer per connection per wait.
pub const LOCKED_OUT_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// Failed sign-ins per user name and per client address.
#[derive(Default)]
pub struct Throttle {
    users: Mutex<HashMap<String, Failures>>,
    sources: Mutex<HashMap<IpAddr, Failures>>,
}

impl Throttle {
    /// Refuses a sign-in while its user name or address is locked, naming how long.
    pub fn check(&self, user: &str, source: Option<IpAddr>) -> Result<(), ControlError> {
        let now = Instant::now();
        let left = |f: Option<&Failures>| {
            f.and_then(|f| f.locked_until)
                .and_then(|u| u.checked_duration_since(now))
        };
        let by_user = self.users.lock().ok().and_then(|m| left(m.get(user)));
        let by_source = source.and_then(|s| self.sources.lock().ok().and_then(|m| left(m.get(&s))));
        match (by_user, by_source) {
            (Some(d), _) => Err(ControlError::Unauthorized(format!(
                "The account is locked for user {user:?} after {USER_FAILURES} failed sign-ins; try again in {} s.",
                d.as_secs() + 1
            ))),
            (None, Some(d)) => Err(ControlError::Unauthorized(format!(
                "Too many failed sign-ins from this address; try again in {} s.",
                d.as_secs() + 1
            ))),
            (None, None) => Ok(()),
        }
    }

    /// Counts a failed sign-in.
    pub fn failed(&self, user: &str, source: Option<IpAddr>) {
        let now = Instant::now();
        if let Ok(mut m) = self.users.lock() {
            bump(&mut m, user.to_string(), USER_FAILURES, now);
        }
        if let (Some(s), Ok(mut m)) = (source, self.sources.lock()) {
            bump(&mut m, s, SOURCE_FAILURES, now);
        }
    }

    /// A successful sign-in clears its user name's and address's failures.
    pub fn succeeded(&self, user: &str, source: Option<IpAddr>) {
        if let Ok(mut m) = self.users.lock() {
            m.remove(user);
        }
        if let (Some(s), Ok(mut m)) = (source, self.sources.lock()) {
            m.remove(&s);
        }
    }
}

fn bump<K: std::hash::Hash + Eq + Clone>(
    m: &mut HashMap<K, Failures>,
    key: K,
    limit: u32,
    now: Instant,
) {
    if m.len() >= TRACKED && !m.contains_key(&key) {
        // Forget what has been quiet longest (expired locks first by construction).
        m.retain(|_, f| now.duration_since(f.last) < LOCKOUT);
        if m.len() >= TRACKED {
            if let Some(oldest) = m.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| k.clone()) {
                m.remove(&oldest);
            }
        }
    }
    let f = m.entry(key).or_insert(Failures {
        count: 0,
        last: now,
        locked_until: None,
    });
    // A lock that ran out starts a new count.
    if f.locked_until.is_some_and(|u| u <= now) {
        f.count = 0;
        f.locked_until = None;
    }
    f.count += 1;
    f.last = now;
    if f.count >= limit {
        f.locked_until = Some(now + LOCKOUT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_off_the_runtime_and_unknown_users_never_match() {
        let h = hash("correct horse").await.unwrap();
        assert!(verify(Some(h.clone()), "correct horse").await.unwrap());
        assert!(!verify(Some(h), "wrong").await.unwrap());
        // The dummy hash's password is random: nothing matches a missing user.
        assert!(!verify(None, "").await.unwrap());
        assert!(!verify(Some("not a hash".into()), "x").await.unwrap());
    }

    #[test]
    fn a_user_name_and_an_address_are_locked_after_repeated_failures() {
        let t = Throttle::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..USER_FAILURES - 1 {
            t.failed("alice", Some(a));
        }
        assert!(t.check("alice", Some(a)).is_ok());
        t.failed("alice", Some(a));
        let e = t.check("alice", None).unwrap_err().to_string();
        assert!(e.contains("locked for user \"alice\""), "{e}");
        // Another name from the same address still works until the address's limit.
        assert!(t.check("bob", Some(a)).is_ok());
        for i in 0..SOURCE_FAILURES {
            t.failed(&format!("u{i}"), Some(a));
        }
        let e = t.check("carol", Some(a)).unwrap_err().to_string();
        assert!(e.contains("from this address"), "{e}");
        // Another address is not affected; success clears a name.
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(t.check("carol", Some(b)).is_ok());
        t.succeeded("alice", Some(a));
        assert!(t.check("alice", None).is_ok());
    }

    #[test]
    fn tracking_is_bounded() {
        let t = Throttle::default();
        for i in 0..TRACKED + 50 {
            t.failed(&format!("user{i}"), None);
        }
        assert!(t.users.lock().unwrap().len() <= TRACKED);
    }
}
