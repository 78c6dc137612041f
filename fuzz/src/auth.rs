//! Authentication: what a caller sends to be believed — a bearer token (compact JWT), the
//! challenge answer (a base64 PKCS#1 public key and a signature), the constraints a policy
//! passes to `io.jwt.decode_verify` — and the access policy judging an arbitrary request.

use std::sync::OnceLock;

use gadus_node::auth::{self, jwt, keys};
use serde_json::{Value, json};

use crate::text;

/// RFC 7515 A.2's RSA key: fixed, so every run judges the same signatures.
fn key() -> &'static rsa::PrivateKey {
    static KEY: OnceLock<rsa::PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        keys::private_from_jwk(&json!({
            "kty":"RSA",
            "n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ",
            "e":"AQAB",
            "d":"Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ",
            "p":"4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc",
            "q":"uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc",
        }))
        .expect("RFC 7515 A.2 key")
    })
}

/// The one token the fixed key signed, and its claims.
fn genuine() -> &'static (String, Value) {
    static T: OnceLock<(String, Value)> = OnceLock::new();
    T.get_or_init(|| {
        let claims = json!({"iss": "n", "aud": ["n"], "sub": "alice", "ns": {"*": 5}});
        let t = jwt::encode_sign(&json!({"alg": "RS256", "typ": "JWT"}), &claims, key())
            .expect("sign the genuine token");
        (t, claims)
    })
}

fn access_policy() -> &'static auth::Policy {
    static P: OnceLock<auth::Policy> = OnceLock::new();
    P.get_or_init(|| auth::load_policy("builtin:anonymous").expect("builtin policy"))
}

/// The first byte picks the decoder; the rest is its input.
/// - 0: a bearer token: `jwt::decode` never panics, and `jwt::verify` with the fixed key
///   accepts nothing but the genuine token's claims (nobody without the key can mint one).
/// - 1: a challenge answer `public key (base64) NUL signature`: decoding is total; the fixed
///   key's signature over the input is recognised, and no other bytes commit to its digest.
/// - 2: a `decode_verify` constraints object: refused or usable, never a panic.
/// - 3: a request `method NUL path NUL authorization NUL body` judged by the default access
///   policy: always a decision, never a panic or an evaluation error.
pub fn auth(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 4 {
        0 => {
            let Some(t) = text(rest) else { return };
            if let Some(d) = jwt::decode(t) {
                let _ = (d.header.len(), d.claims.len());
            }
            let (genuine, claims) = genuine();
            let c = jwt::Constraints {
                keys: vec![key().to_public_key()],
                iss: Some("n".into()),
                aud: Some("n".into()),
                time_ns: 0,
            };
            if let Some(d) = jwt::verify(t, &c) {
                assert_eq!(
                    Value::Object(d.claims),
                    *claims,
                    "a token other than the genuine one verified: {t:?} (genuine {genuine:?})"
                );
            }
        }
        1 => {
            let (k, sig) = match rest.iter().position(|&b| b == 0) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            let Some(k) = text(k) else { return };
            if let Ok(public) = keys::public_key_from_base64(k) {
                let _ = keys::signed_digest(&public, sig);
                let _ = keys::client_id(&public);
            }
            // The fixed key's own signature over the input is always recognised.
            let public = key().to_public_key();
            let s = keys::sign(key(), rest).expect("sign");
            assert!(keys::verify(&public, rest, &s));
            let digest: [u8; 32] =
                sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(rest))
                    .into();
            assert_eq!(keys::signed_digest(&public, &s), Some(digest));
            // PKCS#1 v1.5 signatures are unique (s = EM^d mod n, EM fixed by the digest): no
            // other byte string commits to the same digest, so none can be replayed in a new
            // form against the challenge table.
            if keys::signed_digest(&public, sig) == Some(digest) {
                assert_eq!(sig, s.as_slice(), "a second signature commits to the same digest");
            }
        }
        2 => {
            let Ok(v) = serde_json::from_slice::<Value>(rest) else { return };
            if let Ok(c) = jwt::Constraints::from_value(&v, 0) {
                assert!(!c.keys.is_empty(), "usable constraints always name a key");
                let _ = jwt::decode_verify(&genuine().0, &c);
            }
        }
        _ => {
            let Some(t) = text(rest) else { return };
            let mut parts = t.splitn(4, '\0');
            let method = parts.next().unwrap_or("GET");
            let path = parts.next().unwrap_or("/");
            let authorization = parts.next().unwrap_or("");
            let body = parts.next().unwrap_or("");
            let segs: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
            let mut headers = json!({});
            if !authorization.is_empty() {
                headers["Authorization"] = json!([authorization]);
            }
            let input = json!({
                "http": {"host": "h", "method": method, "path": segs, "query": {}, "headers": headers, "body": body},
                "constraints": {"cert": keys::public_jwks(&key().to_public_key()), "iss": "n", "aud": "n"},
                "job": {"id": "j", "namespace": "default", "owner": "alice"},
            });
            let out = access_policy()
                .eval_all(&["bacalhau.authz.allow", "bacalhau.authz.token_valid"], &input, 0)
                .unwrap_or_else(|e| panic!("the default policy failed on {input}: {e}"));
            assert_eq!(out.len(), 2);
        }
    }
}
