//! # Trust at the API: who is calling, and may they?
//!
//! Bacalhau's model (`../shared/reference/bacalhau-api.md` §6), made safe to expose:
//!
//! - [`keys`]: RSA keys — the CLI's `user_id.pem`, the node's token-signing key — and the
//!   client ID (hex SHA-256 of the modulus).
//! - [`jwt`]: RS256 tokens, made and checked with OPA's semantics.
//! - [`policy`]: Rego (regorus) with the builtins Bacalhau's policies call; `now` is an input.
//! - [`challenge`]: single-use challenge phrases (Bacalhau's phrase is the node ID, so one
//!   captured signature logs in forever; ours expire and are spent on use).
//! - this module: [`Auth`], the node's authenticator and authorizer. `GET /api/v1/auth` lists
//!   the methods of `API.Auth.Methods`; `POST /api/v1/auth/{name}` checks a challenge
//!   signature or asked-for answers, then the method's policy (`bacalhau.authn.token`) decides
//!   and signs a token. Every request is then judged by the access policy
//!   (`API.Auth.AccessPolicyPath`: `bacalhau.authz.allow`, `bacalhau.authz.token_valid`):
//!   denied with a valid token is 403, otherwise 401. Without an access policy every request
//!   is allowed, as Bacalhau does.

pub mod challenge;
pub mod jwt;
pub mod keys;
pub mod owner;
pub mod policy;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use rsa::PrivateKey;
use serde_json::{Map, Value, json};

pub use policy::{Policy, PolicyError};

/// The phrase-signing method's type name.
pub const CHALLENGE: &str = "challenge";
/// The question-answering method's type name.
pub const ASK: &str = "ask";

/// The node's token-signing key, in the data directory.
pub const NODE_KEY_FILE: &str = "node_token_key.pem";

/// Policies shipped in the binary (`builtin:<name>`), from `policies/`.
pub const BUILTIN_POLICIES: &[(&str, &str)] = &[
    ("challenge-anon", include_str!("../../../policies/challenge-anon.rego")),
    ("no-anon", include_str!("../../../policies/no-anon.rego")),
    ("anonymous", include_str!("../../../policies/anonymous.rego")),
    ("password", include_str!("../../../policies/password.rego")),
    ("allowed-clients", include_str!("../../../policies/allowed-clients.rego")),
];

/// Loads a policy from a path or `builtin:<name>`.
pub fn load_policy(spec: &str) -> Result<Policy, PolicyError> {
    if let Some(name) = spec.strip_prefix("builtin:") {
        let (_, text) =
            BUILTIN_POLICIES.iter().find(|(n, _)| *n == name).ok_or_else(|| PolicyError::Load {
                name: spec.into(),
                error: format!(
                    "no builtin policy {name:?} (there are: {})",
                    BUILTIN_POLICIES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ),
            })?;
        return Policy::new(spec, text);
    }
    let text = std::fs::read(spec)
        .map_err(|e| PolicyError::Load { name: spec.into(), error: e.to_string() })?;
    if text.len() > 1024 * 1024 {
        return Err(PolicyError::Load { name: spec.into(), error: "larger than 1 MiB".into() });
    }
    let text = String::from_utf8(text)
        .map_err(|_| PolicyError::Load { name: spec.into(), error: "not UTF-8".into() })?;
    Policy::new(spec, &text)
}

/// One configured authentication method.
#[derive(Debug)]
pub struct Method {
    /// `challenge` or `ask`.
    pub kind: String,
    /// The policy that decides and issues the token.
    pub policy: Policy,
}

/// Why the node cannot set up authentication (the operator's configuration is at fault).
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// A method's type is unknown.
    #[error("API.Auth.Methods.{name}.Type: {kind:?} is not a method type (challenge or ask)")]
    Kind {
        /// The method.
        name: String,
        /// Its type.
        kind: String,
    },
    /// An `ask` method without a policy.
    #[error(
        "API.Auth.Methods.{0}.PolicyPath: an ask method needs a policy that defines bacalhau.authn.schema and bacalhau.authn.token"
    )]
    AskWithoutPolicy(String),
    /// A policy does not load or lacks its rules.
    #[error("{0}")]
    Policy(#[from] PolicyError),
    /// A policy lacks a rule the method needs.
    #[error("policy {policy} does not define {rule}")]
    MissingRule {
        /// The policy.
        policy: String,
        /// The rule.
        rule: String,
    },
    /// A method's user list or client allow-list is missing or malformed.
    #[error("API.Auth.Methods.{name}.{key}: {error}")]
    Data {
        /// The method.
        name: String,
        /// `UsersFile` or `AllowedClients`.
        key: &'static str,
        /// Why.
        error: String,
    },
}

/// One authentication method as configured.
#[derive(Clone, Debug, Default)]
pub struct MethodSpec {
    /// `challenge` or `ask`.
    pub kind: String,
    /// A policy path or `builtin:<name>`; empty = the default for the type.
    pub policy_path: String,
    /// `UsersFile`: a JSON object username -> [scrypt hash, salt], or empty.
    pub users_file: String,
    /// `AllowedClients`: client IDs, comma-separated, or empty.
    pub allowed_clients: String,
}

impl MethodSpec {
    /// The data document the method's policy sees: `data.gadus.users` and
    /// `data.gadus.allowed_clients`, from the operator's files and lists, checked here so a
    /// typo fails the start instead of every login.
    fn data(&self, name: &str) -> Result<Value, AuthSetupError> {
        let bad = |key: &'static str, error: String| AuthSetupError::Data {
            name: name.to_string(),
            key,
            error,
        };
        let mut gadus = serde_json::Map::new();
        if !self.users_file.is_empty() {
            let path = &self.users_file;
            let bytes =
                std::fs::read(path).map_err(|e| bad("UsersFile", format!("{path}: {e}")))?;
            if bytes.len() > 1024 * 1024 {
                return Err(bad("UsersFile", format!("{path}: larger than 1 MiB")));
            }
            let users: BTreeMap<String, [String; 2]> = serde_json::from_slice(&bytes).map_err(|e| {
                bad(
                    "UsersFile",
                    format!("{path}: expected {{\"user\": [\"<hash>\", \"<salt>\"]}} as `gadus auth hash-password` prints the pair: {e}"),
                )
            })?;
            if let Some(u) = users.keys().find(|u| u.is_empty() || u.len() > 128) {
                return Err(bad(
                    "UsersFile",
                    format!("{path}: user name {u:?} (1 to 128 characters)"),
                ));
            }
            gadus.insert("users".into(), serde_json::to_value(users).unwrap_or_default());
        }
        if !self.allowed_clients.is_empty() {
            let ids: Vec<String> = self
                .allowed_clients
                .split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .filter(|c| !c.is_empty())
                .collect();
            if let Some(id) =
                ids.iter().find(|c| c.len() != 64 || !c.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(bad(
                    "AllowedClients",
                    format!("{id:?} is not a client ID (64 hex digits, as `gadus id` prints)"),
                ));
            }
            gadus.insert("allowed_clients".into(), Value::from(ids));
        }
        let needs = match self.policy_path.as_str() {
            "builtin:password" => Some(("UsersFile", "users")),
            "builtin:allowed-clients" => Some(("AllowedClients", "allowed_clients")),
            _ => None,
        };
        if let Some((key, field)) = needs
            && !gadus.contains_key(field)
        {
            return Err(bad(key, format!("{} needs it", self.policy_path)));
        }
        Ok(serde_json::json!({ "gadus": gadus }))
    }
}

/// The outcome of `POST /api/v1/auth/{name}` in Bacalhau's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Authentication {
    /// Whether a token was issued.
    pub success: bool,
    /// Why not.
    pub reason: String,
    /// The token.
    pub token: String,
}

impl Authentication {
    fn denied(reason: impl Into<String>) -> Self {
        Authentication { success: false, reason: reason.into(), token: String::new() }
    }

    /// Bacalhau's JSON: `{"success", "reason"?, "token"?}`.
    pub fn to_json(&self) -> Value {
        let mut v = json!({ "success": self.success });
        if !self.reason.is_empty() {
            v["reason"] = json!(self.reason);
        }
        if !self.token.is_empty() {
            v["token"] = json!(self.token);
        }
        v
    }
}

/// An HTTP request as the access policy sees it (Bacalhau's `input.http`).
#[derive(Debug, Default, Clone)]
pub struct HttpInput {
    /// `Host`.
    pub host: String,
    /// Method.
    pub method: String,
    /// Path (split on `/` after the leading one).
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// Headers, names in Go's canonical form.
    pub headers: BTreeMap<String, Vec<String>>,
    /// Body (lossy UTF-8; empty for streamed routes).
    pub body: String,
    /// The existing job the request names (by path, or by the submitted job's ID), as
    /// `input.job`: `{id, namespace, owner}`.
    pub job: Option<JobRef>,
}

/// A job a request acts on.
#[derive(Debug, Default, Clone)]
pub struct JobRef {
    /// Its ID.
    pub id: String,
    /// Its namespace.
    pub namespace: String,
    /// Its owner (`""` when submitted without a token).
    pub owner: String,
}

/// The access decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// `bacalhau.authz.allow`.
    pub allow: bool,
    /// `bacalhau.authz.token_valid`.
    pub token_valid: bool,
}

/// The node's authenticator and authorizer.
pub struct Auth {
    node_id: String,
    key_path: PathBuf,
    key: OnceLock<Result<Arc<PrivateKey>, String>>,
    /// `input.constraints` (the key's JWKS, issuer, audience), made once with the key.
    constraints: OnceLock<Value>,
    methods: BTreeMap<String, Method>,
    access: Option<Policy>,
    challenges: challenge::Challenges,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("node_id", &self.node_id)
            .field("methods", &self.methods)
            .field("access", &self.access)
            .finish()
    }
}

/// Go's `http.CanonicalHeaderKey`: `content-type` → `Content-Type`.
pub fn canonical_header(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        if upper {
            out.extend(c.to_uppercase())
        } else {
            out.extend(c.to_lowercase())
        }
        upper = c == '-';
    }
    out
}

impl Auth {
    /// Sets up the methods (`name → (type, policy path or "")`) and the access policy.
    pub fn new(
        node_id: &str,
        data_dir: &std::path::Path,
        methods: &BTreeMap<String, MethodSpec>,
        access_policy: &str,
    ) -> Result<Auth, AuthSetupError> {
        let mut out = BTreeMap::new();
        for (name, spec) in methods {
            let (kind, path) = (spec.kind.to_ascii_lowercase(), &spec.policy_path);
            let policy = match (kind.as_str(), path.is_empty()) {
                (CHALLENGE, true) => load_policy("builtin:challenge-anon")?,
                (ASK, true) => return Err(AuthSetupError::AskWithoutPolicy(name.clone())),
                (CHALLENGE | ASK, false) => load_policy(path)?,
                _ => return Err(AuthSetupError::Kind { name: name.clone(), kind }),
            };
            let policy = policy.with_data(spec.data(name)?)?;
            let mut rules = vec!["bacalhau.authn.token"];
            if kind == ASK {
                rules.push("bacalhau.authn.schema");
            }
            for rule in rules {
                if !policy.defines(rule) {
                    return Err(AuthSetupError::MissingRule {
                        policy: policy.name().into(),
                        rule: rule.into(),
                    });
                }
            }
            out.insert(name.clone(), Method { kind, policy });
        }
        let access = if access_policy.is_empty() {
            None
        } else {
            let p = load_policy(access_policy)?;
            for rule in ["bacalhau.authz.allow", "bacalhau.authz.token_valid"] {
                if !p.defines(rule) {
                    return Err(AuthSetupError::MissingRule {
                        policy: p.name().into(),
                        rule: rule.into(),
                    });
                }
            }
            Some(p)
        };
        Ok(Auth {
            node_id: node_id.into(),
            key_path: data_dir.join(NODE_KEY_FILE),
            key: OnceLock::new(),
            constraints: OnceLock::new(),
            methods: out,
            access,
            challenges: challenge::Challenges::default(),
        })
    }

    /// Whether an access policy judges requests (otherwise all are allowed).
    pub fn has_access_policy(&self) -> bool {
        self.access.is_some()
    }

    /// Makes (or reads) the node's token key now, so no request waits for it.
    pub fn warm_up(&self) {
        if let Err(e) = self.key() {
            tracing::error!(error = %e, "the node's token key is unusable");
        }
    }

    /// The node's signing key, made on first use.
    fn key(&self) -> Result<Arc<PrivateKey>, String> {
        self.key
            .get_or_init(|| {
                keys::load_or_create(&self.key_path).map(Arc::new).map_err(|e| e.to_string())
            })
            .clone()
    }

    fn constraints(&self) -> Result<Value, String> {
        if let Some(c) = self.constraints.get() {
            return Ok(c.clone());
        }
        let key = self.key()?;
        let c = json!({
            "cert": keys::public_jwks(&key.to_public_key()),
            "iss": self.node_id,
            "aud": self.node_id,
        });
        Ok(self.constraints.get_or_init(|| c).clone())
    }

    /// A method's requirement (`{type, params}`); a challenge's phrase is fresh each time.
    pub fn requirement(&self, name: &str, now_ns: i64) -> Option<Result<Value, PolicyError>> {
        let m = self.methods.get(name)?;
        Some(match m.kind.as_str() {
            CHALLENGE => {
                let phrase = self.challenges.issue(&self.node_id, now_ns);
                Ok(json!({
                    "type": CHALLENGE,
                    "params": { "InputPhrase": base64::engine::general_purpose::STANDARD.encode(phrase) },
                }))
            }
            _ => m
                .policy
                .eval("bacalhau.authn.schema", &Value::Null, now_ns)
                .map(|schema| json!({ "type": ASK, "params": schema.unwrap_or(Value::Null) })),
        })
    }

    /// Every method's requirement (`GET /api/v1/auth`).
    pub fn requirements(&self, now_ns: i64) -> Result<Map<String, Value>, PolicyError> {
        let mut out = Map::new();
        for name in self.methods.keys() {
            if let Some(r) = self.requirement(name, now_ns) {
                out.insert(name.clone(), r?);
            }
        }
        Ok(out)
    }

    /// Whether `name` is a configured method.
    pub fn has_method(&self, name: &str) -> bool {
        self.methods.contains_key(name)
    }

    /// `POST /api/v1/auth/{name}` with the client's answer.
    pub fn authenticate(
        &self,
        name: &str,
        body: &Value,
        now_ns: i64,
    ) -> Result<Authentication, String> {
        let m =
            self.methods.get(name).ok_or_else(|| format!("no authentication method {name:?}"))?;
        let key = self.key()?;
        let mut input = json!({ "signingKey": keys::private_jwk(&key), "nodeId": self.node_id });
        match m.kind.as_str() {
            CHALLENGE => {
                let field = |k: &str| {
                    body.as_object()
                        .and_then(|o| o.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)))
                        .and_then(|(_, v)| v.as_str())
                        .unwrap_or("")
                };
                let public = match keys::public_key_from_base64(field("PublicKey")) {
                    Ok(k) => k,
                    Err(e) => return Ok(Authentication::denied(format!("PublicKey: {e}"))),
                };
                let sig = field("PhraseSignature");
                let Some(sig) = (sig.len() <= 4096)
                    .then(|| base64::engine::general_purpose::STANDARD.decode(sig).ok())
                    .flatten()
                else {
                    return Ok(Authentication::denied("PhraseSignature is not base64"));
                };
                if !self.challenges.redeem(&public, &sig, now_ns) {
                    return Ok(Authentication::denied(
                        "the signature is not over a current challenge of this node (challenges are single-use and expire: fetch a new one from GET /api/v1/auth)",
                    ));
                }
                input["clientId"] = json!(keys::client_id(&public));
            }
            _ => {
                let answers: Map<String, Value> = match body.as_object() {
                    Some(o) => o
                        .iter()
                        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), json!(s))))
                        .collect(),
                    None => return Ok(Authentication::denied("the answer must be a JSON object")),
                };
                input["ask"] = Value::Object(answers);
            }
        }
        match m.policy.eval("bacalhau.authn.token", &input, now_ns) {
            Ok(Some(Value::String(token))) => {
                Ok(Authentication { success: true, reason: String::new(), token })
            }
            Ok(Some(other)) => Err(format!(
                "policy {} made a token that is not a string: {other}",
                m.policy.name()
            )),
            Ok(None) => Ok(Authentication::denied(if m.kind == CHALLENGE {
                "signature verified but user credentials rejected"
            } else {
                "credentials rejected"
            })),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Judges a request with the access policy (allowed when there is none).
    pub fn authorize(&self, http: &HttpInput, now_ns: i64) -> Decision {
        let Some(policy) = &self.access else {
            return Decision { allow: true, token_valid: true };
        };
        let constraints = match self.constraints() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "the node's token key is unusable: denying");
                return Decision { allow: false, token_valid: false };
            }
        };
        let mut query: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in form_urlencoded::parse(http.query.as_bytes()) {
            query.entry(k.into_owned()).or_default().push(v.into_owned());
        }
        let path: Vec<&str> =
            http.path.strip_prefix('/').unwrap_or(&http.path).split('/').collect();
        let mut input = json!({
            "http": {
                "host": http.host,
                "method": http.method,
                "path": path,
                "query": query,
                "headers": http.headers,
                "body": http.body,
            },
            "constraints": constraints,
        });
        if let Some(j) = &http.job {
            input["job"] = json!({ "id": j.id, "namespace": j.namespace, "owner": j.owner });
        }
        let rules = ["bacalhau.authz.allow", "bacalhau.authz.token_valid"];
        match policy.eval_all(&rules, &input, now_ns) {
            Ok(v) => {
                let yes = |i: usize| v.get(i).cloned().flatten() == Some(Value::Bool(true));
                Decision { allow: yes(0), token_valid: yes(1) }
            }
            Err(e) => {
                tracing::warn!(error = %e, "access policy failed: denying");
                Decision { allow: false, token_valid: false }
            }
        }
    }

    /// The caller named by a request's `Authorization` header (see [`Auth::caller`]).
    pub fn caller_of(&self, headers: &axum::http::HeaderMap, now_ns: i64) -> Option<String> {
        headers
            .get_all(axum::http::header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| self.caller(v, now_ns))
    }

    /// Who a bearer token says the caller is (`sub`), if this node signed it and it is valid
    /// at `now_ns`.
    pub fn caller(&self, authorization: &str, now_ns: i64) -> Option<String> {
        let token = authorization.strip_prefix("Bearer ")?.trim();
        let key = self.key().ok()?;
        let c = jwt::Constraints {
            keys: vec![key.to_public_key()],
            iss: Some(self.node_id.clone()),
            aud: Some(self.node_id.clone()),
            time_ns: now_ns,
        };
        jwt::verify(token, &c)?.claims.get("sub").and_then(Value::as_str).map(str::to_string)
    }
}
