//! Who may use the review page and API.
//!
//! Reviewers are configured with an Argon2 hash of their secret, never the secret. A person
//! signs in once and gets a session: an HttpOnly, SameSite=Strict cookie holding a random
//! token (the server keeps only its SHA-256) and a CSRF token that every state-changing
//! request must echo in the `X-CSRF-Token` header. Scripts may instead send HTTP Basic
//! credentials with each request; those are not ambient browser credentials (the service
//! never asks a browser for them), so they need no CSRF token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{Reviewer, Role};

/// The session cookie's name.
pub const COOKIE: &str = "riskgate_session";

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
    pub name: String,
    pub role: Role,
}

/// A browser session.
#[derive(Debug, Clone)]
pub struct Session {
    pub identity: Identity,
    pub csrf_token: String,
    expires: Instant,
}

impl Session {
    /// Whether `token` is this session's CSRF token (in constant time).
    pub fn csrf_matches(&self, token: &str) -> bool {
        bool::from(self.csrf_token.as_bytes().ct_eq(token.as_bytes()))
    }
}

/// The reviewers and the open sessions.
pub struct Auth {
    reviewers: HashMap<String, Reviewer>,
    /// Compared against when the name is unknown, so that a wrong name takes as long as a
    /// wrong secret.
    decoy: String,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    ttl: Duration,
    secure_cookies: bool,
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

impl Auth {
    pub fn new(
        reviewers: &[Reviewer],
        ttl: Duration,
        secure_cookies: bool,
    ) -> Result<Self, AuthError> {
        Ok(Auth {
            reviewers: reviewers
                .iter()
                .map(|r| (r.name.clone(), r.clone()))
                .collect(),
            decoy: hash_secret("decoy")?,
            sessions: Mutex::new(HashMap::new()),
            ttl,
            secure_cookies,
        })
    }

    /// The reviewer `name` if `secret` is theirs. Slow on purpose (Argon2): call it off the
    /// async workers.
    pub fn verify(&self, name: &str, secret: &str) -> Option<Identity> {
        let reviewer = self.reviewers.get(name);
        let hash = reviewer.map_or(self.decoy.as_str(), |r| r.secret_hash.as_str());
        let ok = PasswordHash::new(hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(secret.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        match reviewer {
            Some(r) if ok => Some(Identity {
                name: r.name.clone(),
                role: r.role,
            }),
            _ => None,
        }
    }

    /// Opens a session for `identity`: its cookie token and the session.
    pub fn open(&self, identity: Identity) -> Result<(String, Session), AuthError> {
        let token = random_token()?;
        let session = Session {
            identity,
            csrf_token: random_token()?,
            expires: Instant::now() + self.ttl,
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(digest(&token), session.clone());
        Ok((token, session))
    }

    /// The live session whose cookie token is `token`.
    pub fn session(&self, token: &str) -> Option<Session> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let key = digest(token);
        match sessions.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    pub fn close(&self, token: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.remove(&digest(token));
    }

    /// The `Set-Cookie` value that stores `token` in the browser.
    pub fn cookie(&self, token: &str) -> String {
        format!(
            "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
            self.ttl.as_secs(),
            if self.secure_cookies { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value that removes it.
    pub fn clear_cookie(&self) -> String {
        format!(
            "{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
            if self.secure_cookies { "; Secure" } else { "" }
        )
    }
}

/// The session token in a `Cookie` header, if any.
pub fn token_in(cookie_header: &str) -> Option<&str> {
    cookie_header
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        let reviewers = [
            Reviewer {
                name: "alice".into(),
                role: Role::Approver,
                secret_hash: hash_secret("correct horse").unwrap(),
            },
            Reviewer {
                name: "vera".into(),
                role: Role::Viewer,
                secret_hash: hash_secret("battery staple").unwrap(),
            },
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
    fn only_the_right_secret_signs_in() {
        let auth = auth();
        assert_eq!(
            auth.verify("alice", "correct horse"),
            Some(Identity {
                name: "alice".into(),
                role: Role::Approver
            })
        );
        assert_eq!(auth.verify("alice", "battery staple"), None);
        assert_eq!(auth.verify("mallory", "correct horse"), None);
        assert_eq!(
            auth.verify("vera", "battery staple").map(|i| i.role),
            Some(Role::Viewer)
        );
    }

    #[test]
    fn sessions_are_found_by_token_and_close() {
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
        auth.close(&token);
        assert!(auth.session(&token).is_none());
    }

    #[test]
    fn sessions_expire() {
        let reviewers = [Reviewer {
            name: "alice".into(),
            role: Role::Approver,
            secret_hash: hash_secret("x").unwrap(),
        }];
        let auth = Auth::new(&reviewers, Duration::ZERO, false).unwrap();
        let id = auth.verify("alice", "x").unwrap();
        let (token, _) = auth.open(id).unwrap();
        assert!(auth.session(&token).is_none());
    }

    #[test]
    fn the_cookie_is_http_only_and_same_site_strict() {
        let auth = auth();
        let c = auth.cookie("abc");
        for part in [
            "riskgate_session=abc",
            "HttpOnly",
            "SameSite=Strict",
            "Path=/",
            "Secure",
            "Max-Age=60",
        ] {
            assert!(c.split("; ").any(|p| p == part), "{part} in {c}");
        }
        assert!(auth.clear_cookie().contains("Max-Age=0"));
        assert_eq!(token_in("a=1; riskgate_session=tok; b=2"), Some("tok"));
        assert_eq!(token_in("riskgate_session="), None);
        assert_eq!(token_in("other=1"), None);
    }
}
