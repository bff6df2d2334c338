//! Who may use the review page and API.
//!
//! Reviewers are configured with an Argon2 hash of their secret, never the secret. A person
//! signs in once and gets a session: an HttpOnly, SameSite=Strict, `Secure` cookie
//! (`__Host-riskgate_session`) holding a random token (the server keeps only its SHA-256) and
//! a CSRF token that every state-changing request must echo in the `X-CSRF-Token` header.
//! Scripts may instead send HTTP Basic credentials with each request; those are not ambient
//! browser credentials (the service asks for them only when they were sent and were wrong),
//! so they need no CSRF token.
//!
//! Names compare as [`person`] reduces them: `Alice`, `alice ` and a look-alike spelling are
//! one reviewer. Sign-in cannot be starved or guessed ([`Throttle`]): a name or a client that
//! keeps failing waits longer and longer (429) without costing an Argon2 run, an unknown name
//! costs none either, and the few secret checks that run at once have a bounded queue (503).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use super::queue::person;
use crate::config::{Reviewer, Role};

/// The session cookie's name over HTTPS: `__Host-` makes the browser keep it to this host,
/// path `/`, and HTTPS.
pub const COOKIE: &str = "__Host-riskgate_session";
/// Its name over plain HTTP on loopback (`secure_cookies = false`).
pub const PLAIN_COOKIE: &str = "riskgate_session";

/// Why a secret could not be hashed or a token made.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no randomness for {what}: {cause}")]
    Randomness {
        what: &'static str,
        cause: getrandom::Error,
    },
    #[error("{0}")]
    Hash(argon2::password_hash::Error),
}

/// Hashes `secret` for a `[[review.reviewers]]` entry: Argon2id with the crate's
/// recommended parameters and a random salt, in PHC format.
pub fn hash_secret(secret: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|cause| AuthError::Randomness {
        what: "a salt",
        cause,
    })?;
    let salt = SaltString::encode_b64(&salt).map_err(AuthError::Hash)?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(AuthError::Hash)
}

/// A signed-in person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The configured name (however it was typed).
    pub name: String,
    pub role: Role,
    /// The agent ids this person operates (their intents they may never approve).
    pub agents: Vec<String>,
}

/// The most event streams one session may hold open.
pub const STREAMS_PER_SESSION: usize = 4;

/// A browser session.
#[derive(Debug, Clone)]
pub struct Session {
    pub identity: Identity,
    pub csrf_token: String,
    expires: Instant,
    /// `true` once the session is closed: its event streams end.
    closed: watch::Sender<bool>,
    /// Its open event streams.
    streams: Arc<AtomicUsize>,
}

impl Session {
    /// Whether `token` is this session's CSRF token (in constant time).
    pub fn csrf_matches(&self, token: &str) -> bool {
        bool::from(self.csrf_token.as_bytes().ct_eq(token.as_bytes()))
    }

    /// Tells when the session closes (signed out or expired).
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// A slot for one more event stream, or `None` when the session holds
    /// [`STREAMS_PER_SESSION`] already; the slot frees itself when dropped.
    pub fn stream_slot(&self) -> Option<StreamSlot> {
        let streams = self.streams.clone();
        let before = streams.fetch_add(1, Ordering::Relaxed);
        if before >= STREAMS_PER_SESSION {
            streams.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(StreamSlot(streams))
    }
}

/// An open event stream of a session (see [`Session::stream_slot`]).
#[derive(Debug)]
pub struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Consecutive failures a name may have before it waits.
pub const FREE_FAILURES_PER_NAME: u32 = 5;
/// Consecutive failures a client may have before it waits.
pub const FREE_FAILURES_PER_CLIENT: u32 = 20;
/// The first wait; each further failure doubles it, up to [`LONGEST_WAIT`].
const FIRST_WAIT: Duration = Duration::from_secs(1);
const LONGEST_WAIT: Duration = Duration::from_secs(15 * 60);
/// Failure records kept at most (the oldest that no longer make anyone wait go first).
const FAILURE_RECORDS: usize = 10_000;

/// A run of failed sign-ins, and the attempts being checked.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// No attempt before then.
    until: Instant,
    /// Attempts begun and not yet known to have failed or succeeded.
    checking: u32,
    /// A refusal has been reported (logged) since the run last grew.
    told: bool,
}

/// A sign-in attempt refused by the [`Throttle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// How long the name or the client must still wait.
    pub wait: Duration,
    /// The first refusal since the run last grew (the one to log; the rest are counted).
    pub first: bool,
}

/// Failed sign-ins by name and by client: after a few, attempts wait (429) for a time that
/// doubles with each failure, without an Argon2 run. An attempt being checked counts as a
/// failure until it is known not to be one, so many at once cannot slip past the free
/// failures together: beyond them, one attempt at a time. A success clears both.
#[derive(Debug, Default)]
pub struct Throttle {
    names: Mutex<HashMap<String, Failures>>,
    clients: Mutex<HashMap<IpAddr, Failures>>,
}

/// The wait after `count` consecutive failures when `free` are free.
fn wait_after(count: u32, free: u32) -> Duration {
    match count.checked_sub(free) {
        None => Duration::ZERO,
        Some(over) => FIRST_WAIT
            .checked_mul(1u32 << over.min(20))
            .unwrap_or(LONGEST_WAIT)
            .min(LONGEST_WAIT),
    }
}

type Runs<K> = Mutex<HashMap<K, Failures>>;

fn lock<K>(runs: &Runs<K>) -> std::sync::MutexGuard<'_, HashMap<K, Failures>> {
    runs.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether an attempt for `key` must wait, and how long.
fn must_wait<K: std::hash::Hash + Eq>(
    m: &mut HashMap<K, Failures>,
    key: &K,
    free: u32,
    now: Instant,
) -> Option<Throttled> {
    let f = m.get_mut(key)?;
    let wait = if f.until > now {
        f.until - now
    } else if f.checking > 0 && f.count + f.checking >= free {
        FIRST_WAIT
    } else {
        return None;
    };
    let first = !std::mem::replace(&mut f.told, true);
    Some(Throttled { wait, first })
}

/// The run of `key`, made if new (when the map is full, runs that no longer make anyone wait
/// go first).
fn run<'m, K: std::hash::Hash + Eq + Clone>(
    m: &'m mut HashMap<K, Failures>,
    key: &K,
    now: Instant,
) -> &'m mut Failures {
    if m.len() >= FAILURE_RECORDS && !m.contains_key(key) {
        m.retain(|_, f| f.until > now || f.checking > 0);
    }
    m.entry(key.clone()).or_insert(Failures {
        count: 0,
        until: now,
        checking: 0,
        told: false,
    })
}

/// Ends one attempt of `key`: a failure extends its run, else it is only no longer checked.
fn end<K: std::hash::Hash + Eq>(runs: &Runs<K>, key: &K, failed: bool, free: u32) {
    let now = Instant::now();
    let mut m = lock(runs);
    if let Some(f) = m.get_mut(key) {
        f.checking = f.checking.saturating_sub(1);
        if failed {
            f.count = f.count.saturating_add(1);
            f.until = now + wait_after(f.count, free);
            f.told = false;
        }
    }
}

/// A sign-in attempt being checked ([`Throttle::begin`]). Dropped without an outcome (the
/// check could not run, the caller went away), it counts for nothing.
#[must_use]
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    name: String,
    client: IpAddr,
    ended: bool,
    /// The name has failed since its last success: its check goes in the other lane.
    pub suspect: bool,
}

impl Attempt<'_> {
    pub fn failed(mut self) {
        self.finish(true);
    }

    /// Clears the name's and the client's runs.
    pub fn succeeded(mut self) {
        self.ended = true;
        lock(&self.throttle.names).remove(&self.name);
        lock(&self.throttle.clients).remove(&self.client);
    }

    fn finish(&mut self, failed: bool) {
        self.ended = true;
        end(
            &self.throttle.names,
            &self.name,
            failed,
            FREE_FAILURES_PER_NAME,
        );
        end(
            &self.throttle.clients,
            &self.client,
            failed,
            FREE_FAILURES_PER_CLIENT,
        );
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.finish(false);
        }
    }
}

impl Throttle {
    /// Begins an attempt of `name` from `client`, or says how long it must wait.
    pub fn begin(&self, name: &str, client: IpAddr) -> Result<Attempt<'_>, Throttled> {
        let now = Instant::now();
        let name = person(name);
        // Always the names before the clients.
        let mut names = lock(&self.names);
        let mut clients = lock(&self.clients);
        let by_name = must_wait(&mut names, &name, FREE_FAILURES_PER_NAME, now);
        let by_client = must_wait(&mut clients, &client, FREE_FAILURES_PER_CLIENT, now);
        if let Some(wait) = by_name.into_iter().chain(by_client).max_by_key(|t| t.wait) {
            return Err(wait);
        }
        let by_name = run(&mut names, &name, now);
        by_name.checking += 1;
        let suspect = by_name.count > 0;
        run(&mut clients, &client, now).checking += 1;
        Ok(Attempt {
            throttle: self,
            name,
            client,
            ended: false,
            suspect,
        })
    }
}

/// Secret checks that may run at once, and a bounded queue for them: a check finds a place
/// within its wait or is refused (busy), and at most [`Lane::QUEUE`] wait.
#[derive(Debug)]
pub struct Lane {
    permits: tokio::sync::Semaphore,
    waiting: AtomicUsize,
    wait: Duration,
}

/// A place in a [`Lane`].
pub type Place<'a> = tokio::sync::SemaphorePermit<'a>;

impl Lane {
    pub const QUEUE: usize = 16;

    pub fn new(at_once: usize, wait: Duration) -> Self {
        Lane {
            permits: tokio::sync::Semaphore::new(at_once),
            waiting: AtomicUsize::new(0),
            wait,
        }
    }

    /// A place to run a check, or `None` when the queue is full or the wait too long.
    pub async fn enter(&self) -> Option<Place<'_>> {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let waiting = Waiting(&self.waiting);
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= Self::QUEUE {
            return None;
        }
        let place = tokio::time::timeout(self.wait, self.permits.acquire()).await;
        drop(waiting);
        place.ok()?.ok()
    }
}

/// The reviewers and the open sessions.
pub struct Auth {
    /// By [`person`] of the configured name.
    reviewers: HashMap<String, Reviewer>,
    /// How long one Argon2 check takes here: an unknown name waits as long (without the
    /// work), so that a wrong name cannot be told from a wrong secret.
    check_time: Duration,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    ttl: Duration,
    secure_cookies: bool,
    pub throttle: Throttle,
}

fn random_token() -> Result<String, AuthError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|cause| AuthError::Randomness {
        what: "a token",
        cause,
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `secret` matches the PHC `hash` (slow: Argon2).
fn matches(hash: &str, secret: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(secret.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

impl Auth {
    pub fn new(
        reviewers: &[Reviewer],
        ttl: Duration,
        secure_cookies: bool,
    ) -> Result<Self, AuthError> {
        // Timed once at start: the wait an unknown name gets.
        let decoy = hash_secret("decoy")?;
        let started = Instant::now();
        let _ = matches(&decoy, "not the decoy");
        Ok(Auth {
            reviewers: reviewers
                .iter()
                .map(|r| (person(&r.name), r.clone()))
                .collect(),
            check_time: started.elapsed(),
            sessions: Mutex::new(HashMap::new()),
            ttl,
            secure_cookies,
            throttle: Throttle::default(),
        })
    }

    /// The configured reviewer that `name` names, if any.
    pub fn reviewer(&self, name: &str) -> Option<&Reviewer> {
        self.reviewers.get(&person(name))
    }

    /// How long a secret check takes (what an unknown name waits instead).
    pub fn check_time(&self) -> Duration {
        self.check_time
    }

    /// The reviewer `name` if `secret` is theirs. Slow on purpose (Argon2): call it off the
    /// async workers, and only for a configured name ([`Auth::reviewer`]).
    pub fn verify(&self, name: &str, secret: &str) -> Option<Identity> {
        let r = self.reviewer(name)?;
        matches(&r.secret_hash, secret).then(|| Identity {
            name: r.name.clone(),
            role: r.role,
            agents: r.agents.clone(),
        })
    }

    /// Opens a session for `identity`: its cookie token and the session.
    pub fn open(&self, identity: Identity) -> Result<(String, Session), AuthError> {
        let token = random_token()?;
        let session = Session {
            identity,
            csrf_token: random_token()?,
            expires: Instant::now() + self.ttl,
            closed: watch::Sender::new(false),
            streams: Arc::new(AtomicUsize::new(0)),
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        sessions.retain(|_, s| {
            let live = s.expires > now;
            if !live {
                s.closed.send_replace(true);
            }
            live
        });
        sessions.insert(digest(&token), session.clone());
        Ok((token, session))
    }

    /// The live session whose cookie token is `token`.
    pub fn session(&self, token: &str) -> Option<Session> {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let key = digest(token);
        match sessions.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                if let Some(s) = sessions.remove(&key) {
                    s.closed.send_replace(true);
                }
                None
            }
            None => None,
        }
    }

    /// Signs a session out: its cookie stops working and its event streams end.
    pub fn close(&self, token: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = sessions.remove(&digest(token)) {
            s.closed.send_replace(true);
        }
    }

    fn cookie_name(&self) -> &'static str {
        if self.secure_cookies {
            COOKIE
        } else {
            PLAIN_COOKIE
        }
    }

    /// The `Set-Cookie` value that stores `token` in the browser.
    pub fn cookie(&self, token: &str) -> String {
        format!(
            "{}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
            self.cookie_name(),
            self.ttl.as_secs(),
            if self.secure_cookies { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value that removes it.
    pub fn clear_cookie(&self) -> String {
        format!(
            "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
            self.cookie_name(),
            if self.secure_cookies { "; Secure" } else { "" }
        )
    }

    /// The session token in a `Cookie` header, if any.
    pub fn token_in<'h>(&self, cookie_header: &'h str) -> Option<&'h str> {
        let name = self.cookie_name();
        cookie_header
            .split(';')
            .filter_map(|c| c.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, value)| value)
            .filter(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reviewer(name: &str, role: Role, secret: &str) -> Reviewer {
        Reviewer {
            name: name.into(),
            role,
            secret_hash: hash_secret(secret).unwrap(),
            agents: vec!["payments-bot".into()],
        }
    }

    fn auth() -> Auth {
        let reviewers = [
            reviewer("alice", Role::Approver, "correct horse"),
            reviewer("vera", Role::Viewer, "battery staple"),
        ];
        Auth::new(&reviewers, Duration::from_secs(60), true).unwrap()
    }

    #[test]
    fn secrets_are_stored_as_salted_argon2_hashes() {
        let a = hash_secret("s3cret").unwrap();
        let b = hash_secret("s3cret").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "a random salt each time");
        assert!(!a.contains("s3cret"));
    }

    #[test]
    fn only_the_right_secret_signs_in_under_any_spelling_of_the_name() {
        let auth = auth();
        let alice = auth.verify("alice", "correct horse").unwrap();
        assert_eq!((alice.name.as_str(), alice.role), ("alice", Role::Approver));
        assert_eq!(alice.agents, ["payments-bot"]);
        assert_eq!(
            auth.verify(" Alice", "correct horse").map(|i| i.name),
            Some("alice".to_owned()),
            "one person, one name"
        );
        assert_eq!(auth.verify("alice", "battery staple"), None);
        assert_eq!(auth.verify("mallory", "correct horse"), None);
        assert!(auth.reviewer("mallory").is_none());
        assert_eq!(
            auth.verify("vera", "battery staple").map(|i| i.role),
            Some(Role::Viewer)
        );
        assert!(auth.check_time() > Duration::ZERO);
    }

    #[test]
    fn sessions_are_found_by_token_and_close_with_their_streams() {
        let auth = auth();
        let id = auth.verify("alice", "correct horse").unwrap();
        let (token, session) = auth.open(id.clone()).unwrap();
        assert_eq!(token.len(), 64);
        assert_ne!(token, session.csrf_token);
        let found = auth.session(&token).unwrap();
        assert_eq!(found.identity, id);
        assert!(found.csrf_matches(&session.csrf_token));
        assert!(!found.csrf_matches(""));
        assert!(!found.csrf_matches(&token));
        assert!(auth.session("0000").is_none());
        // At most four event streams; a closed one frees its slot.
        let slots: Vec<StreamSlot> = (0..STREAMS_PER_SESSION)
            .map(|_| found.stream_slot().unwrap())
            .collect();
        assert!(found.stream_slot().is_none());
        drop(slots);
        assert!(found.stream_slot().is_some());
        let closed = found.closed();
        assert!(!*closed.borrow());
        auth.close(&token);
        assert!(auth.session(&token).is_none());
        assert!(*closed.borrow(), "signing out ends the session's streams");
    }

    #[test]
    fn sessions_expire() {
        let reviewers = [reviewer("alice", Role::Approver, "x")];
        let auth = Auth::new(&reviewers, Duration::ZERO, false).unwrap();
        let id = auth.verify("alice", "x").unwrap();
        let (token, _) = auth.open(id).unwrap();
        assert!(auth.session(&token).is_none());
    }

    #[test]
    fn the_cookie_is_host_only_secure_http_only_and_same_site_strict() {
        let auth = auth();
        let c = auth.cookie("abc");
        for part in [
            "__Host-riskgate_session=abc",
            "HttpOnly",
            "SameSite=Strict",
            "Path=/",
            "Secure",
            "Max-Age=60",
        ] {
            assert!(c.split("; ").any(|p| p == part), "{part} in {c}");
        }
        assert!(auth.clear_cookie().contains("Max-Age=0"));
        assert_eq!(
            auth.token_in("a=1; __Host-riskgate_session=tok; b=2"),
            Some("tok")
        );
        assert_eq!(auth.token_in("riskgate_session=tok"), None);
        assert_eq!(auth.token_in("__Host-riskgate_session="), None);
        let plain = Auth::new(&[], Duration::from_secs(1), false).unwrap();
        assert!(plain.cookie("x").starts_with("riskgate_session=x;"));
        assert!(!plain.cookie("x").contains("Secure"));
    }

    #[test]
    fn failures_make_a_name_or_a_client_wait_longer_and_longer() {
        let t = Throttle::default();
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        for _ in 0..FREE_FAILURES_PER_NAME {
            t.begin("alice", a).unwrap().failed();
        }
        // The name waits, from any client, spelled any way.
        let first = t.begin("Alice ", b).err().unwrap();
        assert!(
            first.wait <= FIRST_WAIT && first.wait > Duration::from_millis(900),
            "{first:?}"
        );
        // The first refusal is the one to log.
        assert!(first.first);
        assert!(!t.begin("alice", a).err().unwrap().first);
        // Another name from that client does not wait yet; a success clears the name.
        t.begin("bob", b).unwrap().succeeded();
        lock(&t.names).get_mut("alice").unwrap().until = Instant::now();
        t.begin("alice", b).unwrap().failed();
        let second = t.begin("alice", b).err().unwrap();
        assert!(second.wait > Duration::from_millis(1900) && second.first);
        lock(&t.names).get_mut("alice").unwrap().until = Instant::now();
        t.begin("alice", b).unwrap().succeeded();
        assert!(t.begin("alice", b).is_ok());
        // A client failing with many names waits too.
        for i in 0..FREE_FAILURES_PER_CLIENT {
            t.begin(&format!("guess-{i}"), b).unwrap().failed();
        }
        assert!(t.begin("carol", b).is_err());
        assert!(t.begin("carol", a).is_ok());
        assert_eq!(wait_after(100, 5), LONGEST_WAIT);
    }

    #[test]
    fn attempts_at_once_cannot_slip_past_the_free_failures_together() {
        let t = Throttle::default();
        let client = |i: u8| IpAddr::from([10, 1, 0, i]);
        // Many clients at once on one name: only the free failures' worth are checked.
        let checking: Vec<_> = (0..50)
            .filter_map(|i| t.begin("vera", client(i)).ok())
            .collect();
        assert_eq!(checking.len(), FREE_FAILURES_PER_NAME as usize);
        for attempt in checking {
            attempt.failed();
        }
        // When the wait is over, one at a time.
        lock(&t.names).get_mut("vera").unwrap().until = Instant::now();
        let one = t.begin("vera", client(60)).unwrap();
        assert_eq!(t.begin("vera", client(61)).err().unwrap().wait, FIRST_WAIT);
        // An attempt that ends without an outcome (the caller left) counts for nothing.
        drop(one);
        assert!(t.begin("vera", client(62)).is_ok());
        assert_eq!(lock(&t.names)["vera"].count, FREE_FAILURES_PER_NAME);
    }

    #[tokio::test]
    async fn a_lane_runs_so_many_at_once_and_queues_a_bounded_few() {
        let lane = Lane::new(1, Duration::from_millis(20));
        let held = lane.enter().await.unwrap();
        // Waiting longer than the wait: refused.
        assert!(lane.enter().await.is_none(), "a place while one is held");
        drop(held);
        assert!(lane.enter().await.is_some());
        assert_eq!(lane.waiting.load(Ordering::Relaxed), 0);
    }
}
