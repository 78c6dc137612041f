//! RS256 JSON Web Tokens (RFC 7519) in compact JWS form (RFC 7515): what the policies'
//! `io.jwt.encode_sign` makes and `io.jwt.decode_verify` checks, with OPA's semantics.
//!
//! Only RS256 is accepted: the node signs with its RSA key, and a token naming any other
//! algorithm (`none`, `HS256` with the public key as secret, ...) is simply invalid.

use base64::Engine as _;
use rsa::{PrivateKey, PublicKey};
use serde_json::{Map, Value, json};

use super::keys;

/// Largest token considered (a Bacalhau token is ~700 bytes).
pub const MAX_TOKEN: usize = 16 * 1024;

/// Why a token could not be made or a constraint not understood (the policy's fault).
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// The header asks for something other than RS256.
    #[error("only RS256 tokens are supported, the header asks for {0:?}")]
    Algorithm(String),
    /// The header or claims are not JSON objects.
    #[error("token {0} must be an object")]
    NotAnObject(&'static str),
    /// The signing key is unusable.
    #[error("signing key: {0}")]
    Key(#[from] keys::KeyError),
    /// `constraints` cannot be used.
    #[error("constraints: {0}")]
    Constraints(String),
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok()
}

/// Signs `claims` under `header` (which must say `"alg": "RS256"`).
pub fn encode_sign(header: &Value, claims: &Value, key: &PrivateKey) -> Result<String, JwtError> {
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    if alg != "RS256" {
        return Err(JwtError::Algorithm(alg.to_string()));
    }
    if !header.is_object() {
        return Err(JwtError::NotAnObject("header"));
    }
    if !claims.is_object() {
        return Err(JwtError::NotAnObject("claims"));
    }
    let signing_input =
        format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let sig = keys::sign(key, signing_input.as_bytes())?;
    Ok(format!("{signing_input}.{}", b64(&sig)))
}

/// What `io.jwt.decode_verify` checks a token against.
#[derive(Debug, Default)]
pub struct Constraints {
    /// Keys any of which may have signed the token (`cert`: a JWK or JWKS document, or a PEM
    /// RSA public key).
    pub keys: Vec<PublicKey>,
    /// Required issuer.
    pub iss: Option<String>,
    /// Required audience (the token's `aud` must name it).
    pub aud: Option<String>,
    /// The time the token must be valid at, Unix nanoseconds.
    pub time_ns: i64,
}

impl Constraints {
    /// Reads OPA's constraints object; `now_ns` stands in for a missing `time`.
    pub fn from_value(v: &Value, now_ns: i64) -> Result<Constraints, JwtError> {
        let bad = |m: String| JwtError::Constraints(m);
        let obj = v.as_object().ok_or_else(|| bad("must be an object".into()))?;
        let mut c = Constraints { time_ns: now_ns, ..Default::default() };
        for (k, v) in obj {
            match k.as_str() {
                "cert" => {
                    let text = v.as_str().ok_or_else(|| bad("cert must be a string".into()))?;
                    c.keys = parse_cert(text).map_err(|e| bad(format!("cert: {e}")))?;
                }
                "iss" => {
                    c.iss =
                        Some(v.as_str().ok_or_else(|| bad("iss must be a string".into()))?.into())
                }
                "aud" => {
                    c.aud =
                        Some(v.as_str().ok_or_else(|| bad("aud must be a string".into()))?.into())
                }
                "time" => {
                    c.time_ns = v
                        .as_i64()
                        .or_else(|| v.as_f64().map(|f| f as i64))
                        .ok_or_else(|| bad("time must be a number of nanoseconds".into()))?
                }
                "alg" => {
                    if v.as_str() != Some("RS256") {
                        return Err(JwtError::Algorithm(v.to_string()));
                    }
                }
                other => return Err(bad(format!("unsupported constraint {other:?}"))),
            }
        }
        if c.keys.is_empty() {
            return Err(bad("no cert given to verify with".into()));
        }
        Ok(c)
    }
}

fn parse_cert(text: &str) -> Result<Vec<PublicKey>, String> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs8::DecodePublicKey;
    let t = text.trim();
    if t.starts_with("-----BEGIN RSA PUBLIC KEY") {
        return PublicKey::from_pkcs1_pem(t).map(|k| vec![k]).map_err(|e| e.to_string());
    }
    if t.starts_with("-----BEGIN PUBLIC KEY") {
        return PublicKey::from_public_key_pem(t).map(|k| vec![k]).map_err(|e| e.to_string());
    }
    let v: Value = serde_json::from_str(t).map_err(|e| format!("neither PEM nor JSON: {e}"))?;
    let jwks: Vec<&Value> = match v.get("keys").and_then(Value::as_array) {
        Some(list) => list.iter().take(16).collect(),
        None => vec![&v],
    };
    jwks.into_iter().map(|j| keys::public_from_jwk(j).map_err(|e| e.to_string())).collect()
}

/// A decoded token: header and claims (unverified).
pub struct Decoded {
    /// The JOSE header.
    pub header: Map<String, Value>,
    /// The claims.
    pub claims: Map<String, Value>,
    signing_input_len: usize,
    signature: Vec<u8>,
}

/// Splits and decodes a compact token without verifying it (`io.jwt.decode`).
pub fn decode(token: &str) -> Option<Decoded> {
    if token.len() > MAX_TOKEN {
        return None;
    }
    let mut parts = token.split('.');
    let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Map<String, Value> = serde_json::from_slice(&unb64(h)?).ok()?;
    let claims: Map<String, Value> = serde_json::from_slice(&unb64(c)?).ok()?;
    Some(Decoded { header, claims, signing_input_len: h.len() + 1 + c.len(), signature: unb64(s)? })
}

/// `io.jwt.decode_verify`: the claims of a token whose RS256 signature is by one of the
/// constraint's keys and whose `exp`/`nbf`/`iss`/`aud` hold at the constraint's time, or
/// `None`. As OPA: `exp` and `nbf` are in seconds; a token with an audience is valid only
/// when the constraints name one of its audiences.
pub fn verify(token: &str, c: &Constraints) -> Option<Decoded> {
    let d = decode(token)?;
    if d.header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return None;
    }
    let signing_input = token.get(..d.signing_input_len)?.as_bytes();
    if !c.keys.iter().any(|k| keys::verify(k, signing_input, &d.signature)) {
        return None;
    }
    let now_s = c.time_ns as f64 / 1e9;
    let number = |k: &str| d.claims.get(k).map(|v| v.as_f64());
    match number("exp") {
        Some(Some(exp)) if now_s >= exp => return None,
        Some(None) => return None,
        _ => {}
    }
    match number("nbf") {
        Some(Some(nbf)) if now_s < nbf => return None,
        Some(None) => return None,
        _ => {}
    }
    if let Some(iss) = &c.iss
        && d.claims.get("iss").and_then(Value::as_str) != Some(iss)
    {
        return None;
    }
    let auds: Vec<&str> = match d.claims.get("aud") {
        None => vec![],
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        Some(_) => return None,
    };
    match &c.aud {
        Some(want) if !auds.contains(&want.as_str()) => return None,
        None if d.claims.contains_key("aud") => return None,
        _ => {}
    }
    Some(d)
}

/// OPA's result triple: `[valid, header, claims]` (`[false, {}, {}]` when invalid).
pub fn decode_verify(token: &str, c: &Constraints) -> Value {
    match verify(token, c) {
        Some(d) => json!([true, d.header, d.claims]),
        None => json!([false, {}, {}]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7515 Appendix A.2: the RS256 example. Its key, header and payload give exactly
    /// its signature (PKCS#1 v1.5 is deterministic), so our signing matches the standard's.
    #[test]
    fn rfc7515_a2_rs256_example_signs_and_verifies() {
        let jwk = json!({
            "kty":"RSA",
            "n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ",
            "e":"AQAB",
            "d":"Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ",
            "p":"4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc",
            "q":"uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc",
        });
        let key = keys::private_from_jwk(&jwk).unwrap();
        // The example's header and payload bytes, verbatim (they contain line breaks).
        let header_b64 = "eyJhbGciOiJSUzI1NiJ9";
        let payload_b64 = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
        let input = format!("{header_b64}.{payload_b64}");
        let sig = keys::sign(&key, input.as_bytes()).unwrap();
        assert_eq!(
            b64(&sig),
            "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw"
        );
        let token = format!("{input}.{}", b64(&sig));
        // exp 1300819380 = 2011-03-22T18:43:00Z.
        let c = Constraints {
            keys: vec![key.to_public_key()],
            time_ns: 1_300_819_379 * 1_000_000_000,
            ..Default::default()
        };
        let d = verify(&token, &c).expect("valid before exp");
        assert_eq!(d.claims["iss"], "joe");
        let late = Constraints { time_ns: 1_300_819_380 * 1_000_000_000, ..c };
        assert!(verify(&token, &late).is_none(), "expired at exp");
    }

    #[test]
    fn tokens_fail_on_any_tampering_audience_issuer_or_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let key = keys::load_or_create(&dir.path().join("k.pem")).unwrap();
        let other = keys::load_or_create(&dir.path().join("o.pem")).unwrap();
        let header = json!({"alg": "RS256", "typ": "JWT"});
        let claims = json!({"iss": "node", "aud": ["node"], "sub": "alice"});
        let token = encode_sign(&header, &claims, &key).unwrap();
        let c = |aud: Option<&str>, iss: Option<&str>, k: &PrivateKey| Constraints {
            keys: vec![k.to_public_key()],
            iss: iss.map(Into::into),
            aud: aud.map(Into::into),
            time_ns: 0,
        };
        assert!(verify(&token, &c(Some("node"), Some("node"), &key)).is_some());
        assert!(verify(&token, &c(Some("node"), Some("node"), &other)).is_none(), "other key");
        assert!(verify(&token, &c(Some("elsewhere"), None, &key)).is_none(), "audience");
        assert!(verify(&token, &c(None, None, &key)).is_none(), "aud but no constraint");
        assert!(verify(&token, &c(Some("node"), Some("x"), &key)).is_none(), "issuer");
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged =
            b64(json!({"iss": "node", "aud": ["node"], "sub": "root"}).to_string().as_bytes());
        parts[1] = &forged;
        assert!(verify(&parts.join("."), &c(Some("node"), None, &key)).is_none(), "claims swapped");
        let none = format!("{}.{}.", b64(br#"{"alg":"none"}"#), token.split('.').nth(1).unwrap());
        assert!(verify(&none, &c(Some("node"), None, &key)).is_none(), "alg none");
        assert!(encode_sign(&json!({"alg": "HS256"}), &claims, &key).is_err());
        assert_eq!(decode_verify("garbage", &c(None, None, &key)), json!([false, {}, {}]));
    }

    #[test]
    fn constraints_read_jwks_and_refuse_what_they_cannot_check() {
        let dir = tempfile::tempdir().unwrap();
        let key = keys::load_or_create(&dir.path().join("k.pem")).unwrap();
        let jwks = keys::public_jwks(&key.to_public_key());
        let c = Constraints::from_value(&json!({"cert": jwks, "iss": "n", "aud": "n"}), 5).unwrap();
        assert_eq!(c.keys.len(), 1);
        assert_eq!(c.time_ns, 5);
        assert!(Constraints::from_value(&json!({"secret": "x"}), 0).is_err());
        assert!(Constraints::from_value(&json!({"iss": "n"}), 0).is_err(), "no key");
        assert!(Constraints::from_value(&json!({"cert": "{}"}), 0).is_err());
    }
}
