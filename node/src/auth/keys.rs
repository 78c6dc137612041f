//! RSA keys: the CLI's identity (`<data dir>/user_id.pem`, as Bacalhau) and the node's
//! token-signing key; the client ID; JWK and JWKS forms for the policies.
//!
//! A key file is PKCS#1 PEM (`-----BEGIN RSA PRIVATE KEY-----`), created with mode 0600 by
//! writing a temporary file and linking it into place, so two processes creating it at once
//! agree on one key and nobody ever reads a half-written one.

use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use rsa::pkcs1::{
    DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPrivateKey, EncodeRsaPublicKey,
};
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BoxedUint, PrivateKey, PublicKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Bacalhau's key size for `user_id.pem`.
pub const KEY_BITS: usize = 2048;

/// Largest key file read (a 4096-bit PKCS#1 PEM is ~3.3 KB).
const MAX_KEY_FILE: u64 = 64 * 1024;

/// Why a key could not be loaded, made or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("key file {path}: {error}")]
    File {
        /// The file.
        path: String,
        /// Why.
        error: String,
    },
    /// The key file holds something that is not an RSA private key.
    #[error("key file {path} is not a PKCS#1 RSA private key (PEM): {error}")]
    NotAKey {
        /// The file.
        path: String,
        /// Why.
        error: String,
    },
    /// A key or a signature sent by a client is malformed.
    #[error("{0}")]
    Malformed(String),
    /// The RSA operation failed.
    #[error("RSA: {0}")]
    Rsa(String),
}

/// Loads the PKCS#1 PEM private key at `path`, creating a fresh 2048-bit one (mode 0600) if
/// there is none.
pub fn load_or_create(path: &Path) -> Result<PrivateKey, KeyError> {
    let file_err = |e: std::io::Error| KeyError::File {
        path: path.display().to_string(),
        error: e.to_string(),
    };
    match read_bounded(path) {
        Ok(text) => return parse_pem(path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(file_err(e)),
    }
    let key = PrivateKey::new(&mut SysRng, KEY_BITS).map_err(|e| KeyError::Rsa(e.to_string()))?;
    let pem =
        key.to_pkcs1_pem(rsa::pkcs1::LineEnding::LF).map_err(|e| KeyError::Rsa(e.to_string()))?;
    let tmp = private_temp(path, pem.as_bytes()).map_err(file_err)?;
    match tmp.persist_noclobber(path) {
        Ok(_) => Ok(key),
        // Another process made it first: use theirs.
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = read_bounded(path).map_err(file_err)?;
            parse_pem(path, &text)
        }
        Err(e) => Err(file_err(e.error)),
    }
}

/// A synced temporary file with mode 0600 holding `bytes`, in `path`'s directory (made if
/// missing), ready to be linked into place: nobody ever reads a half-written secret.
fn private_temp(path: &Path, bytes: &[u8]) -> std::io::Result<tempfile::NamedTempFile> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".private-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    Ok(tmp)
}

/// Writes a secret (a key, the token store) to `path` with mode 0600, atomically replacing
/// what was there.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    private_temp(path, bytes)?.persist(path).map(|_| ()).map_err(|e| e.error)
}

fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut text = String::new();
    f.take(MAX_KEY_FILE).read_to_string(&mut text)?;
    Ok(text)
}

fn parse_pem(path: &Path, text: &str) -> Result<PrivateKey, KeyError> {
    PrivateKey::from_pkcs1_pem(text)
        .map_err(|e| KeyError::NotAKey { path: path.display().to_string(), error: e.to_string() })
}

/// The operating system's random generator, for key generation.
struct SysRng;

impl rsa::rand_core::TryRng for SysRng {
    type Error = getrandom::Error;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        getrandom::fill(dst)
    }
}

impl rsa::rand_core::TryCryptoRng for SysRng {}

/// Bacalhau's client ID: hex SHA-256 of the public modulus (big-endian, no leading zeros).
pub fn client_id(key: &PublicKey) -> String {
    hex(&Sha256::digest(key.n_bytes()))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The public key as the challenge method sends it: base64 (standard) of PKCS#1 DER.
pub fn public_key_base64(key: &PublicKey) -> Result<String, KeyError> {
    let der = key.to_pkcs1_der().map_err(|e| KeyError::Rsa(e.to_string()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(der.as_bytes()))
}

/// Decodes a client's public key (base64 of PKCS#1 DER, as Bacalhau's client sends it).
pub fn public_key_from_base64(text: &str) -> Result<PublicKey, KeyError> {
    if text.len() > 8 * 1024 {
        return Err(KeyError::Malformed("public key is longer than 8 KiB".into()));
    }
    let der = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| KeyError::Malformed(format!("public key is not base64: {e}")))?;
    PublicKey::from_pkcs1_der(&der)
        .map_err(|e| KeyError::Malformed(format!("public key is not a PKCS#1 RSA key: {e}")))
}

/// Signs `msg` with RSASSA-PKCS1-v1_5 over SHA-256 (the challenge, RS256).
pub fn sign(key: &PrivateKey, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
    key.pkcs1v15_sign::<Sha256>(msg).map_err(|e| KeyError::Rsa(e.to_string()))
}

/// Verifies an RSASSA-PKCS1-v1_5 SHA-256 signature.
pub fn verify(key: &PublicKey, msg: &[u8], sig: &[u8]) -> bool {
    key.pkcs1v15_verify::<Sha256>(msg, sig).is_ok()
}

/// The SHA-256 digest a PKCS#1 v1.5 SHA-256 signature commits to, read back from the
/// signature with the public operation (`s^e mod n`), or `None` if the signature does not
/// have that padding. Used only to find which outstanding challenge a client signed (its
/// answer does not repeat the phrase); the signature is then checked in full by [`verify`].
pub fn signed_digest(key: &PublicKey, sig: &[u8]) -> Option<[u8; 32]> {
    // DigestInfo prefix of SHA-256 (RFC 8017 §9.2, note 1).
    const PREFIX: [u8; 19] = [
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    let k = key.size();
    if sig.len() != k {
        return None;
    }
    let s = BoxedUint::from_be_slice(sig, key.n().bits_precision()).ok()?;
    if s >= *key.n().as_ref() {
        return None;
    }
    let m = rsa::hazmat::rsa_encrypt(key, &s).ok()?;
    let em = m.to_be_bytes_trimmed_vartime();
    // The encoded message is 00 01 FF.. 00 || prefix || digest; trimmed, the leading 00 is gone.
    let em = em.as_ref();
    if em.len() != k - 1 || em.first() != Some(&0x01) {
        return None;
    }
    let tail = &em[em.len() - 32 - PREFIX.len()..];
    if tail[..PREFIX.len()] != PREFIX {
        return None;
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&tail[PREFIX.len()..]);
    Some(out)
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn uint(v: &BoxedUint) -> String {
    b64url(&v.to_be_bytes_trimmed_vartime())
}

/// The private key as a JWK (RFC 7518 §6.3), what the policies receive as `input.signingKey`.
pub fn private_jwk(key: &PrivateKey) -> Value {
    let primes = key.primes();
    let mut jwk = json!({
        "kty": "RSA",
        "n": b64url(&key.n_bytes()),
        "e": b64url(&key.e_bytes()),
        "d": uint(key.d()),
    });
    if let [p, q] = primes {
        jwk["p"] = json!(uint(p.as_ref()));
        jwk["q"] = json!(uint(q.as_ref()));
    }
    if let (Some(dp), Some(dq), Some(qi)) = (key.dp(), key.dq(), key.crt_coefficient()) {
        jwk["dp"] = json!(uint(dp));
        jwk["dq"] = json!(uint(dq));
        jwk["qi"] = json!(uint(&qi));
    }
    jwk
}

/// The public key as a JWKS document (a string, as OPA's `cert` constraint takes it).
pub fn public_jwks(key: &PublicKey) -> String {
    json!({ "keys": [{
        "kty": "RSA",
        "alg": "RS256",
        "use": "sig",
        "n": b64url(&key.n_bytes()),
        "e": b64url(&key.e_bytes()),
    }]})
    .to_string()
}

fn jwk_uint(jwk: &Value, field: &str) -> Result<BoxedUint, KeyError> {
    let text = jwk
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| KeyError::Malformed(format!("JWK has no {field:?}")))?;
    if text.len() > 2048 {
        return Err(KeyError::Malformed(format!("JWK field {field:?} is too long")));
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|e| KeyError::Malformed(format!("JWK field {field:?}: {e}")))?;
    if bytes.is_empty() {
        return Err(KeyError::Malformed(format!("JWK field {field:?} is empty")));
    }
    let bits = u32::try_from(bytes.len() * 8)
        .map_err(|_| KeyError::Malformed(format!("JWK field {field:?} is too long")))?;
    BoxedUint::from_be_slice(&bytes, bits)
        .map_err(|e| KeyError::Malformed(format!("JWK field {field:?}: {e:?}")))
}

fn require_rsa(jwk: &Value) -> Result<(), KeyError> {
    match jwk.get("kty").and_then(Value::as_str) {
        Some("RSA") => Ok(()),
        other => Err(KeyError::Malformed(format!("JWK kty is {other:?}, only RSA is supported"))),
    }
}

/// A private key from a JWK (what `io.jwt.encode_sign` is given).
pub fn private_from_jwk(jwk: &Value) -> Result<PrivateKey, KeyError> {
    require_rsa(jwk)?;
    let (n, e, d) = (jwk_uint(jwk, "n")?, jwk_uint(jwk, "e")?, jwk_uint(jwk, "d")?);
    let primes = vec![jwk_uint(jwk, "p")?, jwk_uint(jwk, "q")?];
    PrivateKey::from_components(n, e, d, primes).map_err(|e| KeyError::Malformed(e.to_string()))
}

/// A public key from a JWK.
pub fn public_from_jwk(jwk: &Value) -> Result<PublicKey, KeyError> {
    require_rsa(jwk)?;
    PublicKey::new(jwk_uint(jwk, "n")?, jwk_uint(jwk, "e")?)
        .map_err(|e| KeyError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_is_private_to_its_owner_and_loads_back_the_same() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user_id.pem");
        let a = load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN RSA PRIVATE KEY-----"), "{text}");
        let b = load_or_create(&path).unwrap();
        assert_eq!(client_id(&a.to_public_key()), client_id(&b.to_public_key()));
        assert_eq!(client_id(&a.to_public_key()).len(), 64);
    }

    #[test]
    fn signatures_verify_and_reveal_the_digest_they_commit_to() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_create(&dir.path().join("k.pem")).unwrap();
        let public = key.to_public_key();
        let sig = sign(&key, b"phrase").unwrap();
        assert!(verify(&public, b"phrase", &sig));
        assert!(!verify(&public, b"other", &sig));
        let digest: [u8; 32] = Sha256::digest(b"phrase").into();
        assert_eq!(signed_digest(&public, &sig), Some(digest));
        let mut bad = sig.clone();
        bad[10] ^= 1;
        assert_eq!(signed_digest(&public, &bad), None);
        assert_eq!(signed_digest(&public, &sig[1..]), None);
    }

    #[test]
    fn jwk_forms_round_trip_and_sign_alike() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_create(&dir.path().join("k.pem")).unwrap();
        let back = private_from_jwk(&private_jwk(&key)).unwrap();
        let sig = sign(&back, b"x").unwrap();
        assert!(verify(&key.to_public_key(), b"x", &sig));
        let jwks: Value = serde_json::from_str(&public_jwks(&key.to_public_key())).unwrap();
        let public = public_from_jwk(&jwks["keys"][0]).unwrap();
        assert_eq!(public, key.to_public_key());
        let b64 = public_key_base64(&public).unwrap();
        assert_eq!(public_key_from_base64(&b64).unwrap(), public);
        assert!(public_key_from_base64("not base64!").is_err());
        assert!(private_from_jwk(&json!({"kty": "EC"})).is_err());
    }
}
