//! Challenge phrases: fresh, single-use, short-lived.
//!
//! Bacalhau's phrase is the node ID, so a signature once seen (in a log, a proxy, a
//! compromised client) logs in forever. Here every `GET /api/v1/auth` issues a new phrase
//! naming the node, a random nonce and an expiry; it is still just bytes in `InputPhrase`, so
//! Bacalhau's client signs it unchanged. The client's answer does not repeat the phrase, so
//! the node finds it by the digest the signature commits to ([`keys::signed_digest`]), then
//! verifies the signature in full and spends the phrase.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use rsa::PublicKey;
use sha2::{Digest, Sha256};

use super::keys;

/// How long a phrase can be answered.
pub const TTL_NS: i64 = 5 * 60 * 1_000_000_000;
/// Outstanding phrases kept; beyond it the oldest is forgotten (a flood of `GET /api/v1/auth`
/// costs the flooder's own phrases, and memory stays bounded).
pub const MAX_OUTSTANDING: usize = 16_384;

#[derive(Default)]
struct State {
    /// Digest of the phrase → (phrase, expiry).
    open: BTreeMap<[u8; 32], (Vec<u8>, i64)>,
    /// Issue order, for eviction.
    order: VecDeque<[u8; 32]>,
    /// Phrases issued so far (makes each phrase unique even without randomness).
    issued: u64,
}

/// The outstanding phrases of one node.
#[derive(Default)]
pub struct Challenges {
    state: Mutex<State>,
}

impl Challenges {
    /// A new phrase for `node_id`, valid until `now_ns + TTL_NS`.
    pub fn issue(&self, node_id: &str, now_ns: i64) -> Vec<u8> {
        let mut nonce = [0u8; 16];
        // Without randomness the phrase is still unique per issue (the counter below), only
        // guessable; that cannot happen on Linux with getrandom.
        let _ = getrandom::fill(&mut nonce);
        let expires = now_ns.saturating_add(TTL_NS);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.issued += 1;
        let phrase = format!(
            "gadus challenge for node {node_id}: nonce {} #{} expires {expires}",
            keys::hex(&nonce),
            st.issued
        )
        .into_bytes();
        let digest: [u8; 32] = Sha256::digest(&phrase).into();
        // Expired phrases go first, then the oldest while over the bound.
        while let Some(first) = st.order.front().copied() {
            let expired = st.open.get(&first).is_none_or(|(_, exp)| *exp <= now_ns);
            if expired || st.order.len() >= MAX_OUTSTANDING {
                st.order.pop_front();
                st.open.remove(&first);
            } else {
                break;
            }
        }
        st.open.insert(digest, (phrase.clone(), expires));
        st.order.push_back(digest);
        debug_assert!(st.open.len() <= MAX_OUTSTANDING);
        phrase
    }

    /// Whether `sig` by `key` signs an outstanding, unexpired phrase; if so, the phrase is
    /// spent.
    pub fn redeem(&self, key: &PublicKey, sig: &[u8], now_ns: i64) -> bool {
        let Some(digest) = keys::signed_digest(key, sig) else { return false };
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some((phrase, expires)) = st.open.get(&digest) else { return false };
        if *expires <= now_ns || !keys::verify(key, phrase, sig) {
            return false;
        }
        st.open.remove(&digest);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phrase_logs_in_once_before_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let key = keys::load_or_create(&dir.path().join("k.pem")).unwrap();
        let public = key.to_public_key();
        let c = Challenges::default();
        let phrase = c.issue("node-1", 1_000);
        assert!(String::from_utf8_lossy(&phrase).contains("node-1"));
        let sig = keys::sign(&key, &phrase).unwrap();
        assert!(c.redeem(&public, &sig, 2_000), "fresh phrase");
        assert!(!c.redeem(&public, &sig, 2_000), "replayed signature");
        let late = c.issue("node-1", 0);
        let sig = keys::sign(&key, &late).unwrap();
        assert!(!c.redeem(&public, &sig, TTL_NS), "expired phrase");
        // The node ID itself (Bacalhau's phrase) is not a challenge here.
        let sig = keys::sign(&key, b"node-1").unwrap();
        assert!(!c.redeem(&public, &sig, 0));
        // A different key's signature over a live phrase does not log in as anyone.
        let other = keys::load_or_create(&dir.path().join("o.pem")).unwrap();
        let phrase = c.issue("node-1", 0);
        let sig = keys::sign(&other, &phrase).unwrap();
        assert!(!c.redeem(&public, &sig, 1));
        assert!(c.redeem(&other.to_public_key(), &sig, 1));
    }

    #[test]
    fn outstanding_phrases_are_bounded() {
        let c = Challenges::default();
        for i in 0..(MAX_OUTSTANDING + 10) {
            c.issue("n", i as i64);
        }
        let st = c.state.lock().unwrap();
        assert_eq!(st.open.len(), MAX_OUTSTANDING);
        assert_eq!(st.order.len(), MAX_OUTSTANDING);
    }
}
