//! The gateway's API keys: 32 random bytes each, shown once as `rgk_` and their base64url,
//! kept in the configuration only as the SHA-256 of that text. A key is checked by hashing
//! what the caller sent and looking the hash up: one SHA-256 per request, no slow password
//! hash (a key has 256 bits of entropy; nothing is gained by stretching it).

use std::collections::HashMap;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::config::ApiKey;

/// What every key starts with, so that a leaked one is recognisable (secret scanners).
pub const PREFIX: &str = "rgk_";

/// The configured keys, by hash.
#[derive(Debug, Default)]
pub struct Keys {
    agents: HashMap<[u8; 32], String>,
}

/// Who a request speaks for, by its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub agent: String,
    /// The key's hash: what its rate limit is counted by.
    pub key: [u8; 32],
}

impl Keys {
    pub fn new(keys: &[ApiKey]) -> Keys {
        Keys {
            agents: keys.iter().map(|k| (k.sha256, k.agent.clone())).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.agents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// The caller a key (as sent, after `Bearer `) speaks for.
    pub fn caller(&self, key: &str) -> Option<Caller> {
        let hash = hash(key);
        self.agents.get(&hash).map(|agent| Caller {
            agent: agent.clone(),
            key: hash,
        })
    }
}

/// The SHA-256 of a key's text.
pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A new key, and its hash in hex for `[[gateway.keys]]`.
pub fn generate() -> Result<(String, String), getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let key = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hex = hash(&key).iter().map(|b| format!("{b:02x}")).collect();
    Ok((key, hex))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_found_by_its_hash_and_nothing_else_is() {
        let (key, hex) = generate().unwrap();
        assert!(
            key.starts_with(PREFIX) && key.len() == PREFIX.len() + 43,
            "{key}"
        );
        assert_eq!(hex.len(), 64);
        let sha256: [u8; 32] =
            std::array::from_fn(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap());
        let keys = Keys::new(&[ApiKey {
            agent: "payments-bot".into(),
            sha256,
        }]);
        assert_eq!(keys.caller(&key).unwrap().agent, "payments-bot");
        assert_eq!(keys.caller(&format!("{key}x")), None);
        assert_eq!(keys.caller(""), None);
        // Two keys are never the same.
        assert_ne!(generate().unwrap().0, key);
        // The hash is SHA-256 of the key's text (as `printf %s KEY | sha256sum` gives).
        assert_eq!(
            hash("abc")
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
