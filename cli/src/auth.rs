//! The client's side of authentication, as Bacalhau's CLI does it.
//!
//! The client's identity is an RSA key in `<data dir>/user_id.pem` (made on first use, mode
//! 0600). Tokens live in `<data dir>/tokens.json`, a map from the node's API URL to its token
//! (mode 0600), and go out as `Authorization: Bearer`. When the node answers 401, the client
//! logs in by a method the node lists: `challenge` silently, by signing the node's phrase
//! with the key; `ask` with `--username`/`BACALHAU_API_USERNAME` and
//! `BACALHAU_API_PASSWORD` (scripts), or by prompting for the fields the node's schema asks
//! for (without echo for `writeOnly` ones).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use base64::Engine as _;
use gadus_node::auth::keys;
use serde_json::{Value, json};

/// The client key's file name (Bacalhau's).
pub const USER_KEY_FILE: &str = "user_id.pem";
/// The token store's file name (Bacalhau's).
pub const TOKENS_FILE: &str = "tokens.json";

/// Where a client keeps its key and tokens, and what it answers when asked.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The data directory.
    pub dir: PathBuf,
    /// Answers given in advance (`username`, `password`), from flags or the environment.
    pub answers: BTreeMap<String, String>,
}

impl Identity {
    /// The identity in `dir`, with answers from the environment (`BACALHAU_API_USERNAME`,
    /// `BACALHAU_API_PASSWORD`, or the `GADUS_` names).
    pub fn from_env(dir: PathBuf) -> Identity {
        let mut answers = BTreeMap::new();
        for (field, names) in [
            ("username", ["BACALHAU_API_USERNAME", "GADUS_API_USERNAME"]),
            ("password", ["BACALHAU_API_PASSWORD", "GADUS_API_PASSWORD"]),
        ] {
            if let Some(v) = names.iter().find_map(|n| std::env::var(n).ok()) {
                answers.insert(field.to_string(), v);
            }
        }
        Identity { dir, answers }
    }

    /// The client's key, made if there is none.
    pub fn key(&self) -> anyhow::Result<rsa::PrivateKey> {
        Ok(keys::load_or_create(&self.dir.join(USER_KEY_FILE))?)
    }

    /// The client ID: hex SHA-256 of the public modulus.
    pub fn client_id(&self) -> anyhow::Result<String> {
        Ok(keys::client_id(&self.key()?.to_public_key()))
    }

    fn tokens_path(&self) -> PathBuf {
        self.dir.join(TOKENS_FILE)
    }

    fn read_tokens(&self) -> BTreeMap<String, String> {
        std::fs::read(self.tokens_path())
            .ok()
            .filter(|b| b.len() <= 1024 * 1024)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// The stored token for the API at `base`.
    pub fn token(&self, base: &str) -> Option<String> {
        self.read_tokens().remove(base).filter(|t| !t.is_empty())
    }

    /// Stores (or with `None`, forgets) the token for `base`.
    pub fn store_token(&self, base: &str, token: Option<&str>) -> anyhow::Result<()> {
        let mut all = self.read_tokens();
        match token {
            Some(t) => all.insert(base.to_string(), t.to_string()),
            None => all.remove(base),
        };
        let path = self.tokens_path();
        keys::write_private(&path, &serde_json::to_vec_pretty(&all)?)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// The answer to a method's requirement: the JSON body `POST /api/v1/auth/{name}` takes.
pub fn answer(id: &Identity, kind: &str, params: &Value) -> anyhow::Result<Value> {
    match kind {
        "challenge" => {
            let phrase = params
                .get("InputPhrase")
                .and_then(Value::as_str)
                .context("the node's challenge has no InputPhrase")?;
            let phrase = base64::engine::general_purpose::STANDARD
                .decode(phrase)
                .context("the node's InputPhrase is not base64")?;
            let key = id.key()?;
            let sig = keys::sign(&key, &phrase)?;
            Ok(json!({
                "PhraseSignature": base64::engine::general_purpose::STANDARD.encode(sig),
                "PublicKey": keys::public_key_base64(&key.to_public_key())?,
            }))
        }
        "ask" => ask(id, params),
        other => bail!("the node asks for a {other:?} login, which this client does not know"),
    }
}

/// Answers a JSON-schema `ask` requirement: given answers first, then prompts.
fn ask(id: &Identity, schema: &Value) -> anyhow::Result<Value> {
    let props = schema.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
    let mut fields: Vec<String> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    for k in props.keys() {
        if !fields.contains(k) {
            fields.push(k.clone());
        }
    }
    let mut out = serde_json::Map::new();
    let stdin = std::io::stdin();
    for f in fields {
        if let Some(v) = id.answers.get(&f.to_ascii_lowercase()) {
            out.insert(f, json!(v));
            continue;
        }
        let secret = props
            .get(&f)
            .and_then(|p| p.get("writeOnly"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        eprint!("{f}: ");
        std::io::stderr().flush().ok();
        let echo = if secret { EchoOff::new() } else { None };
        let mut line = String::new();
        stdin.lock().read_line(&mut line).context("reading your answer")?;
        if echo.is_some() {
            eprintln!();
        }
        drop(echo);
        out.insert(f, json!(line.trim_end_matches(['\n', '\r'])));
    }
    Ok(Value::Object(out))
}

/// Turns the terminal's echo off while alive (nothing when stdin is not a terminal).
struct EchoOff(rustix::termios::Termios);

impl EchoOff {
    fn new() -> Option<EchoOff> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).ok()?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &quiet).ok()?;
        Some(EchoOff(saved))
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.0,
        );
    }
}

/// Bacalhau's `gen_password`: `[hash, salt]` for a password, salt 32 random bytes.
pub fn hash_password(password: &str) -> anyhow::Result<(String, String)> {
    let mut salt = [0u8; 32];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let salt = base64::engine::general_purpose::STANDARD.encode(salt);
    Ok((gadus_node::auth::policy::scrypt_b64(password, &salt)?, salt))
}
