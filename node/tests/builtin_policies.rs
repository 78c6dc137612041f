//! The shipped policies (`policies/*.rego`), case by case as `opa test` would run them, but
//! through regorus and gadus's own builtins, with a real node key and real tokens.

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is the failure report.

use gadus_node::auth::{self, Policy, jwt, keys};
use serde_json::{Value, json};

const NODE: &str = "node-1";
const NOW: i64 = 1_800_000_000 * 1_000_000_000;

struct World {
    key: rsa::PrivateKey,
    stranger: rsa::PrivateKey,
    _dir: tempfile::TempDir,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    World {
        key: keys::load_or_create(&dir.path().join("node.pem")).unwrap(),
        stranger: keys::load_or_create(&dir.path().join("other.pem")).unwrap(),
        _dir: dir,
    }
}

fn token(key: &rsa::PrivateKey, sub: &str, exp_s: i64) -> String {
    jwt::encode_sign(
        &json!({"alg": "RS256", "typ": "JWT"}),
        &json!({"iss": NODE, "aud": [NODE], "sub": sub, "exp": exp_s}),
        key,
    )
    .unwrap()
}

fn input(w: &World, method: &str, path: &str, bearer: Option<&str>, owner: Option<&str>) -> Value {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut headers = json!({});
    if let Some(t) = bearer {
        headers["Authorization"] = json!([format!("Bearer {t}")]);
    }
    let mut v = json!({
        "http": {"host": "n", "method": method, "path": segs, "query": {}, "headers": headers, "body": ""},
        "constraints": {"cert": keys::public_jwks(&w.key.to_public_key()), "iss": NODE, "aud": NODE},
    });
    if let Some(o) = owner {
        v["job"] = json!({"id": "j-1", "namespace": "default", "owner": o});
    }
    v
}

fn decide(p: &Policy, input: &Value) -> (bool, bool) {
    let rule = |r| p.eval(r, input, NOW).unwrap() == Some(json!(true));
    (rule("bacalhau.authz.allow"), rule("bacalhau.authz.token_valid"))
}

#[test]
fn anonymous_reads_and_submits_but_only_owners_act_on_their_jobs() {
    let w = world();
    let p = auth::load_policy("builtin:anonymous").unwrap();
    let later = NOW / 1_000_000_000 + 3600;
    let alice = token(&w.key, "alice", later);
    let bob = token(&w.key, "bob", later);
    let forged = token(&w.stranger, "alice", later);
    let expired = token(&w.key, "alice", NOW / 1_000_000_000 - 1);
    let jobs = "/api/v1/orchestrator/jobs";
    let job = "/api/v1/orchestrator/jobs/j-1";
    // (method, path, token, job owner) → (allow, token_valid)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>, (bool, bool));
    let cases: &[Case<'_>] = &[
        ("GET", jobs, None, None, (true, true)),
        ("PUT", jobs, None, None, (true, true)),
        ("PUT", jobs, Some(&bob), None, (true, true)),
        ("DELETE", job, None, Some(""), (true, true)),
        ("DELETE", job, None, Some("alice"), (false, true)),
        ("DELETE", job, Some(&bob), Some("alice"), (false, true)),
        ("DELETE", job, Some(&alice), Some("alice"), (true, true)),
        ("PUT", jobs, Some(&bob), Some("alice"), (false, true)),
        ("PUT", jobs, Some(&alice), Some("alice"), (true, true)),
        ("GET", job, Some(&bob), Some("alice"), (true, true)),
        ("GET", &format!("{job}/logs"), Some(&bob), Some("alice"), (false, true)),
        ("GET", &format!("{job}/results"), None, Some("alice"), (false, true)),
        ("GET", &format!("{job}/results"), Some(&alice), Some("alice"), (true, true)),
        ("GET", "/results/e-1.tar.gz", Some(&bob), Some("alice"), (false, true)),
        ("GET", "/results/e-1.tar.gz", Some(&alice), Some("alice"), (true, true)),
        ("GET", "/results/e-1.tar.gz", None, Some(""), (true, true)),
        ("GET", jobs, Some(&forged), None, (false, false)),
        ("DELETE", job, Some(&forged), Some("alice"), (false, false)),
        ("GET", jobs, Some(&expired), None, (false, false)),
    ];
    for (method, path, bearer, owner, want) in cases {
        let got = decide(&p, &input(&w, method, path, *bearer, *owner));
        assert_eq!(got, *want, "{method} {path} token={} owner={owner:?}", bearer.is_some());
    }
}

#[test]
fn no_anon_opens_only_login_version_and_liveness() {
    let w = world();
    let p = auth::load_policy("builtin:no-anon").unwrap();
    let valid = token(&w.key, "alice", NOW / 1_000_000_000 + 60);
    let forged = token(&w.stranger, "alice", NOW / 1_000_000_000 + 60);
    for open in
        ["/api/v1/auth", "/api/v1/auth/ClientKey", "/api/v1/agent/version", "/api/v1/agent/alive"]
    {
        assert!(decide(&p, &input(&w, "GET", open, None, None)).0, "{open}");
    }
    assert!(decide(&p, &input(&w, "POST", "/api/v1/auth/ClientKey", None, None)).0);
    for closed in
        ["/api/v1/orchestrator/jobs", "/api/v1/agent/node", "/ipfs/bafy", "/results/e-1.tar.gz"]
    {
        assert_eq!(decide(&p, &input(&w, "GET", closed, None, None)), (false, false), "{closed}");
        assert_eq!(decide(&p, &input(&w, "GET", closed, Some(&forged), None)), (false, false));
        assert_eq!(decide(&p, &input(&w, "GET", closed, Some(&valid), None)), (true, true));
    }
}

#[test]
fn challenge_anon_issues_a_verifiable_token_naming_the_client_deterministically() {
    let w = world();
    let p = auth::load_policy("builtin:challenge-anon").unwrap();
    let input =
        json!({"signingKey": keys::private_jwk(&w.key), "nodeId": NODE, "clientId": "c0ffee"});
    let t = p.eval("bacalhau.authn.token", &input, NOW).unwrap().unwrap();
    let t = t.as_str().unwrap();
    let c = jwt::Constraints {
        keys: vec![w.key.to_public_key()],
        iss: Some(NODE.into()),
        aud: Some(NODE.into()),
        time_ns: NOW,
    };
    let d = jwt::verify(t, &c).expect("the node's own token verifies");
    assert_eq!(d.claims["sub"], "c0ffee");
    assert_eq!(d.claims["iat"], json!(NOW / 1_000_000_000), "seconds, as RFC 7519 says");
    assert_eq!(d.claims["exp"], json!(NOW / 1_000_000_000 + 30 * 24 * 3600));
    assert_eq!(d.claims["ns"], json!({"*": 5, "c0ffee": 15}));
    // Valid for 30 days, not after.
    let late = jwt::Constraints { time_ns: NOW + 30 * 24 * 3600 * 1_000_000_000, ..c };
    assert!(jwt::verify(t, &late).is_none());
    // The same decision at the same time is the same token: a decision can be replayed.
    let again = p.eval("bacalhau.authn.token", &input, NOW).unwrap().unwrap();
    assert_eq!(again.as_str(), Some(t));
}

/// builtin:password: the operator's users (`data.gadus.users`, from `UsersFile`) log in with
/// their password; a wrong password, an unknown user or a non-string field gets no token.
#[test]
fn password_issues_tokens_only_for_listed_users_with_their_password() {
    let w = world();
    let salt = "d9ucnhE5kHEqm0YEWqN5qJmrHB+IDqjuPEwLkmZ9BGs=";
    let hash = auth::policy::scrypt_b64("s3cret", salt).unwrap();
    let p = auth::load_policy("builtin:password")
        .unwrap()
        .with_data(json!({"gadus": {"users": {"alice": [hash, salt]}}}))
        .unwrap();
    assert!(p.defines("bacalhau.authn.schema"));
    let ask = |user: Value, password: Value| {
        let input = json!({"signingKey": keys::private_jwk(&w.key), "nodeId": NODE,
            "ask": {"username": user, "password": password}});
        p.eval("bacalhau.authn.token", &input, NOW).unwrap()
    };
    let t = ask(json!("alice"), json!("s3cret")).expect("alice logs in");
    let c = jwt::Constraints {
        keys: vec![w.key.to_public_key()],
        iss: Some(NODE.into()),
        aud: Some(NODE.into()),
        time_ns: NOW,
    };
    let d = jwt::verify(t.as_str().unwrap(), &c).unwrap();
    assert_eq!(d.claims["sub"], "alice");
    assert_eq!(d.claims["ns"], json!({"*": 5, "alice": 15}));
    for (user, password) in [
        (json!("alice"), json!("wrong")),
        (json!("bob"), json!("s3cret")),
        (json!(["alice"]), json!("s3cret")),
        (json!("alice"), json!(null)),
        (json!(""), json!("")),
    ] {
        assert_eq!(ask(user.clone(), password.clone()), None, "{user} / {password}");
    }
}

/// builtin:allowed-clients: only the listed client IDs get a token.
#[test]
fn allowed_clients_issues_tokens_only_for_listed_keys() {
    let w = world();
    let listed = "ab".repeat(32);
    let p = auth::load_policy("builtin:allowed-clients")
        .unwrap()
        .with_data(json!({"gadus": {"allowed_clients": [listed]}}))
        .unwrap();
    let token = |client: &str| {
        let input =
            json!({"signingKey": keys::private_jwk(&w.key), "nodeId": NODE, "clientId": client});
        p.eval("bacalhau.authn.token", &input, NOW).unwrap()
    };
    assert!(token(&listed).is_some());
    assert_eq!(token(&"cd".repeat(32)), None);
    assert_eq!(token(""), None);
}
