//! The integrity of riskgate's own records ([docs/design.md](../docs/design.md#95-integrity-of-riskgates-own-records)):
//! every record riskgate produces (decisions, review records, dead letters) carries an
//! HMAC-SHA256 over its topic, its key and its exact value bytes, in the record header
//! `riskgate-mac` as `<key id>:<base64url>`; every reader of riskgate's records (restore, the
//! review queue, the gateway) ignores a record whose MAC does not verify. Kafka ACLs say who
//! may write a topic; the MAC says that riskgate wrote the record, for the day an ACL is wrong.
//!
//! Any configured key verifies; `current` signs, so keys rotate without downtime: add the
//! new key, then make it current, then drop the old one once no record signed with it is
//! retained.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The record header that carries the MAC.
pub const HEADER: &str = "riskgate-mac";

/// What the MAC covers starts with this, so that no other use of the same key can produce a
/// valid MAC for a record (version 1 of the input below).
const DOMAIN: &[u8] = b"riskgate-mac-v1\0";

/// A key's secret: at least [`MIN_SECRET_BYTES`], never printed. It keeps the HMAC state
/// keyed with it, so that each record costs only the hashing of its own bytes.
#[derive(Clone)]
pub struct Secret {
    bytes: Arc<[u8]>,
    keyed: Hmac<Sha256>,
}

/// The fewest bytes a key's secret may have.
pub const MIN_SECRET_BYTES: usize = 32;

impl Secret {
    pub fn new(bytes: &[u8]) -> Secret {
        #[allow(clippy::expect_used)] // HMAC takes keys of any length.
        let keyed =
            <Hmac<Sha256> as Mac>::new_from_slice(bytes).expect("HMAC takes any key length");
        Secret {
            bytes: Arc::from(bytes),
            keyed,
        }
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The keys of a deployment: every one verifies, `current` signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    keys: BTreeMap<String, Secret>,
    current: String,
}

/// Why a record does not verify (a label of `riskgate_unverified_records_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unverified {
    /// No `riskgate-mac` header.
    Missing,
    /// A header that is not `<key id>:<base64url>` of 32 bytes.
    Malformed,
    /// A key id this deployment does not have.
    UnknownKey,
    /// The MAC does not match the record.
    BadMac,
}

impl Unverified {
    pub const ALL: [Unverified; 4] = [
        Unverified::Missing,
        Unverified::Malformed,
        Unverified::UnknownKey,
        Unverified::BadMac,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Unverified::Missing => "missing",
            Unverified::Malformed => "malformed",
            Unverified::UnknownKey => "unknown_key",
            Unverified::BadMac => "bad_mac",
        }
    }
}

impl Keys {
    /// `keys` by id; `current` must be one of them (the configuration checks it).
    pub fn new(keys: BTreeMap<String, Secret>, current: String) -> Keys {
        Keys { keys, current }
    }

    pub fn current(&self) -> &str {
        &self.current
    }

    fn mac(secret: &Secret, topic: &str, key: Option<&[u8]>, value: &[u8]) -> Hmac<Sha256> {
        // A slice longer than u32 cannot be a Kafka record's part; its length is capped only
        // to keep the framing total.
        let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
        let mut mac = secret.keyed.clone();
        mac.update(DOMAIN);
        mac.update(&len(topic.len()));
        mac.update(topic.as_bytes());
        match key {
            Some(k) => {
                mac.update(&[1]);
                mac.update(&len(k.len()));
                mac.update(k);
            }
            None => mac.update(&[0]),
        }
        mac.update(value);
        mac
    }

    /// The `riskgate-mac` header value of a record of `topic` with `key` and `value`.
    pub fn sign(&self, topic: &str, key: Option<&[u8]>, value: &[u8]) -> String {
        let Some(secret) = self.keys.get(&self.current) else {
            return String::new();
        };
        let tag = Self::mac(secret, topic, key, value).finalize().into_bytes();
        let mut out = String::with_capacity(self.current.len() + 44);
        out.push_str(&self.current);
        out.push(':');
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(tag, &mut out);
        out
    }

    /// Checks the `riskgate-mac` header (`None`: absent) of a record: the id of the key that
    /// signed it, or why it does not verify. The comparison takes constant time.
    pub fn verify<'h>(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        header: Option<&'h [u8]>,
    ) -> Result<&'h str, Unverified> {
        let header = header.ok_or(Unverified::Missing)?;
        let text = std::str::from_utf8(header).map_err(|_| Unverified::Malformed)?;
        let (id, tag) = text.split_once(':').ok_or(Unverified::Malformed)?;
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| Unverified::Malformed)?;
        if tag.len() != 32 {
            return Err(Unverified::Malformed);
        }
        let secret = self.keys.get(id).ok_or(Unverified::UnknownKey)?;
        Self::mac(secret, topic, key, value)
            .verify_slice(&tag)
            .map(|()| id)
            .map_err(|_| Unverified::BadMac)
    }
}

/// How a deployment treats its records: signed with [`Keys`] or not, and whether readers
/// require a MAC.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Integrity {
    /// `None`: no keys configured; records are neither signed nor checked (the service says
    /// so at start).
    pub keys: Option<Keys>,
    /// Readers ignore records without a MAC. With keys and without `require`, a record
    /// without a MAC is accepted (while records written before the keys are retained) but a
    /// wrong one never is.
    pub require: bool,
}

impl Integrity {
    /// At the start of a reader of `topic`: says once when records are unauthenticated, and
    /// shows `counter`'s series for `topic`, for every reason (`more` besides the MAC's), at
    /// 0, so that the first record ignored is an increase an alert sees.
    pub fn announce(&self, counter: &prometheus::IntCounterVec, topic: &str, more: &[&str]) {
        if self.keys.is_none() {
            tracing::warn!("[integrity] has no keys: riskgate's records are not signed, and readers cannot tell them from records anyone else writes to its topics (docs/security.md)");
        }
        let reasons = Unverified::ALL.iter().map(|u| u.as_str());
        for reason in reasons.chain(more.iter().copied()) {
            counter.with_label_values(&[topic, reason]);
        }
    }

    /// The header value for a record, when records are signed.
    pub fn sign(&self, topic: &str, key: Option<&[u8]>, value: &[u8]) -> Option<String> {
        self.keys.as_ref().map(|k| k.sign(topic, key, value))
    }

    /// Whether a reader may use the record: `Ok` when its MAC verifies, or when it has none
    /// and none is required.
    pub fn check(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        header: Option<&[u8]>,
    ) -> Result<(), Unverified> {
        match (&self.keys, header) {
            (_, None) if !self.require => Ok(()),
            // Without keys nothing can be checked: the service said so at start.
            (None, _) if !self.require => Ok(()),
            (None, _) => Err(Unverified::UnknownKey),
            (Some(keys), header) => keys.verify(topic, key, value, header).map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(current: &str) -> Keys {
        let mut m = BTreeMap::new();
        m.insert("k1".to_owned(), Secret::new(&[1u8; 32]));
        m.insert("k2".to_owned(), Secret::new(&[2u8; 32]));
        Keys::new(m, current.to_owned())
    }

    #[test]
    fn a_record_verifies_with_any_configured_key_and_not_once_changed() {
        let old = keys("k1");
        let header = old.sign("decisions", Some(b"acct-1"), b"{\"x\":1}");
        assert!(header.starts_with("k1:"), "{header}");
        assert_eq!(header.len(), "k1:".len() + 43, "32 bytes in base64url");
        // Rotated: k2 signs, k1 still verifies.
        let rotated = keys("k2");
        let check = |topic: &str, key: Option<&[u8]>, value: &[u8], h: &str| {
            rotated
                .verify(topic, key, value, Some(h.as_bytes()))
                .map(str::to_owned)
        };
        assert_eq!(
            check("decisions", Some(b"acct-1"), b"{\"x\":1}", &header),
            Ok("k1".to_owned())
        );
        // Anything changed: value, key, no key, topic.
        for (topic, key, value) in [
            ("decisions", Some(&b"acct-1"[..]), &b"{\"x\":2}"[..]),
            ("decisions", Some(b"acct-2"), b"{\"x\":1}"),
            ("decisions", None, b"{\"x\":1}"),
            ("intents.dlq", Some(b"acct-1"), b"{\"x\":1}"),
        ] {
            assert_eq!(check(topic, key, value, &header), Err(Unverified::BadMac));
        }
        // Key and value cannot trade bytes: the key's length is part of the input.
        let h = old.sign("t", Some(b"ab"), b"c");
        assert_eq!(
            old.verify("t", Some(b"a"), b"bc", Some(h.as_bytes())),
            Err(Unverified::BadMac)
        );
        assert_eq!(
            rotated.verify(
                "t",
                None,
                b"v",
                Some(b"k9:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            ),
            Err(Unverified::UnknownKey)
        );
        for bad in ["k1", "k1:not base64!", "k1:AAAA", ""] {
            assert_eq!(
                rotated.verify("t", None, b"v", Some(bad.as_bytes())),
                Err(Unverified::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            rotated.verify("t", None, b"v", None),
            Err(Unverified::Missing)
        );
    }

    #[test]
    fn the_mac_is_the_documented_one() {
        // Computed apart from this code, from docs/security.md's definition, with Python's
        // hmac: hmac.new(bytes(range(32)), b"riskgate-mac-v1\0" + struct.pack(">I", 9) +
        // b"decisions" + b"\1" + struct.pack(">I", 6) + b"acct-1" + b'{"x":1}', sha256),
        // base64url without padding; and the same without a key (b"\0" for the key part).
        let k = Keys::new(
            BTreeMap::from([(
                "k1".to_owned(),
                Secret::new(&(0u8..32).collect::<Vec<u8>>()),
            )]),
            "k1".to_owned(),
        );
        assert_eq!(
            k.sign("decisions", Some(b"acct-1"), b"{\"x\":1}"),
            "k1:Nb8PUyx3oGdNH5fTgwY0WgvwYlX1ChYCdVg28dba97o"
        );
        assert_eq!(
            k.sign("decisions", None, b"{\"x\":1}"),
            "k1:XGYjkgC_HHLIQszzNeV8cRe-qGLuWZSV8H1ODhWt6tg"
        );
    }

    #[test]
    fn what_readers_accept_follows_keys_and_require() {
        let signed = keys("k1");
        let h = signed.sign("t", None, b"v");
        let with = |require| Integrity {
            keys: Some(signed.clone()),
            require,
        };
        assert_eq!(
            with(true).check("t", None, b"v", Some(h.as_bytes())),
            Ok(())
        );
        assert_eq!(
            with(true).check("t", None, b"v", None),
            Err(Unverified::Missing)
        );
        // Without `require`, a record without a MAC passes, a wrong one never does.
        assert_eq!(with(false).check("t", None, b"v", None), Ok(()));
        assert_eq!(
            with(false).check("t", None, b"w", Some(h.as_bytes())),
            Err(Unverified::BadMac)
        );
        let none = Integrity::default();
        assert_eq!(none.check("t", None, b"v", None), Ok(()));
        assert_eq!(none.sign("t", None, b"v"), None);
        assert!(format!("{:?}", signed).contains("<redacted>"));
        assert!(!format!("{:?}", signed).contains("[1, 1"));
    }
}
