//! Rego policies, evaluated by regorus, with the builtins Bacalhau's policies need and
//! regorus lacks: `io.jwt.encode_sign`, `io.jwt.decode_verify`, `io.jwt.decode` and
//! Bacalhau's `scrypt`.
//!
//! Deciding is deterministic: `time.now_ns()` (and the default time of
//! `io.jwt.decode_verify`) is the `now` the caller passes to [`Policy::eval`], never a clock
//! read inside the evaluation, so a decision can be replayed and simulated. A policy is parsed
//! once; each evaluation runs on a clone (cheap: the parsed and analysed policy is shared).

use base64::Engine as _;
use regorus::Value as RValue;
use serde_json::Value;

use super::{jwt, keys};

/// Bacalhau's scrypt parameters: N = 2^15, r = 8, p = 1, 32-byte key.
const SCRYPT_LOG_N: u8 = 15;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;
const SCRYPT_LEN: usize = 32;

/// Why a policy could not be loaded or evaluated (the policy's author is at fault).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file does not parse or names an unknown builtin policy.
    #[error("policy {name}: {error}")]
    Load {
        /// The policy's name (path or `builtin:<name>`).
        name: String,
        /// Why.
        error: String,
    },
    /// Evaluating a rule failed (a builtin error is an error, as with OPA's strict mode).
    #[error("policy {name}, rule {rule}: {error}")]
    Eval {
        /// The policy's name.
        name: String,
        /// The rule.
        rule: String,
        /// Why.
        error: String,
    },
}

/// A loaded policy.
#[derive(Clone)]
pub struct Policy {
    name: String,
    engine: regorus::Engine,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy").field("name", &self.name).finish()
    }
}

std::thread_local! {
    /// The `now` of the evaluation running on this thread. Evaluation is synchronous and the
    /// builtins run on the caller's thread, so the extensions read the caller's time here:
    /// registered once on the parsed policy, they leave it analysed once, not per request.
    static NOW_NS: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

fn now_ns() -> i64 {
    NOW_NS.with(std::cell::Cell::get)
}

fn to_json(v: &RValue) -> anyhow::Result<Value> {
    Ok(serde_json::to_value(v)?)
}

fn from_json(v: Value) -> anyhow::Result<RValue> {
    Ok(serde_json::from_value::<RValue>(v)?)
}

/// `scrypt(password, salt_base64)` as Bacalhau defines it: the key, base64 (standard).
pub fn scrypt_b64(password: &str, salt_b64: &str) -> anyhow::Result<String> {
    let salt = base64::engine::general_purpose::STANDARD.decode(salt_b64)?;
    let params = scrypt::Params::new(SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P)
        .map_err(|e| anyhow::anyhow!("scrypt parameters: {e}"))?;
    let mut out = [0u8; SCRYPT_LEN];
    scrypt::scrypt(password.as_bytes(), &salt, &params, &mut out)
        .map_err(|e| anyhow::anyhow!("scrypt: {e}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(out))
}

impl Policy {
    /// Parses `text` (Rego v1, as OPA 1.x reads it) under `name`.
    pub fn new(name: &str, text: &str) -> Result<Policy, PolicyError> {
        let load =
            |e: anyhow::Error| PolicyError::Load { name: name.into(), error: format!("{e:#}") };
        let mut engine = regorus::Engine::new();
        engine.add_policy(name.to_string(), text.to_string()).map_err(load)?;
        engine
            .add_extension(
                "io.jwt.encode_sign".into(),
                3,
                Box::new(|a: Vec<RValue>| -> anyhow::Result<RValue> {
                    let header = to_json(&a[0])?;
                    let claims = to_json(&a[1])?;
                    let key = keys::private_from_jwk(&to_json(&a[2])?)?;
                    Ok(RValue::from(jwt::encode_sign(&header, &claims, &key)?))
                }),
            )
            .map_err(load)?;
        engine
            .add_extension(
                "io.jwt.decode".into(),
                1,
                Box::new(|a: Vec<RValue>| -> anyhow::Result<RValue> {
                    let token = a[0].as_string()?;
                    let d = jwt::decode(token)
                        .ok_or_else(|| anyhow::anyhow!("io.jwt.decode: not a compact JWT"))?;
                    from_json(serde_json::json!([d.header, d.claims, ""]))
                }),
            )
            .map_err(load)?;
        engine
            .add_extension(
                "scrypt".into(),
                2,
                Box::new(|a: Vec<RValue>| -> anyhow::Result<RValue> {
                    Ok(RValue::from(scrypt_b64(a[0].as_string()?, a[1].as_string()?)?))
                }),
            )
            .map_err(load)?;
        engine
            .add_extension(
                "time.now_ns".into(),
                0,
                Box::new(|_: Vec<RValue>| -> anyhow::Result<RValue> { Ok(RValue::from(now_ns())) }),
            )
            .map_err(load)?;
        engine
            .add_extension(
                "io.jwt.decode_verify".into(),
                2,
                Box::new(|a: Vec<RValue>| -> anyhow::Result<RValue> {
                    let token = a[0].as_string()?;
                    let c = jwt::Constraints::from_value(&to_json(&a[1])?, now_ns())?;
                    from_json(jwt::decode_verify(token, &c))
                }),
            )
            .map_err(load)?;
        // Analyse once here (the first evaluation does it), so every clone starts prepared.
        engine.eval_query("true".into(), false).map_err(load)?;
        Ok(Policy { name: name.into(), engine })
    }

    /// The policy with `data` as its data document (`data.gadus.users` and the like: the
    /// operator's lists that builtin policies read), analysed again.
    pub fn with_data(mut self, data: Value) -> Result<Policy, PolicyError> {
        let load = |e: anyhow::Error| PolicyError::Load {
            name: self.name.clone(),
            error: format!("its data: {e:#}"),
        };
        let data = from_json(data).map_err(load)?;
        self.engine.add_data(data).map_err(load)?;
        self.engine.eval_query("true".into(), false).map_err(load)?;
        Ok(self)
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Evaluates `rule` (e.g. `bacalhau.authz.allow`) with `input` at `now_ns`: `None` when
    /// the rule is undefined for this input.
    pub fn eval(
        &self,
        rule: &str,
        input: &Value,
        now_ns: i64,
    ) -> Result<Option<Value>, PolicyError> {
        let mut out = self.eval_all(&[rule], input, now_ns)?;
        Ok(out.pop().flatten())
    }

    /// Evaluates several rules on one input (one engine, one conversion of the input).
    pub fn eval_all(
        &self,
        rules: &[&str],
        input: &Value,
        now_ns: i64,
    ) -> Result<Vec<Option<Value>>, PolicyError> {
        let fail = |e: anyhow::Error| PolicyError::Eval {
            name: self.name.clone(),
            rule: rules.join(", "),
            error: format!("{e:#}"),
        };
        let mut e = self.engine.clone();
        NOW_NS.with(|n| n.set(now_ns));
        e.set_input(from_json(input.clone()).map_err(fail)?);
        let mut out = Vec::with_capacity(rules.len());
        for r in rules {
            let v = e.eval_rule(format!("data.{r}")).map_err(fail)?;
            out.push(if v == RValue::Undefined { None } else { Some(to_json(&v).map_err(fail)?) });
        }
        debug_assert_eq!(out.len(), rules.len());
        Ok(out)
    }

    /// Whether the policy defines `rule` at all.
    pub fn defines(&self, rule: &str) -> bool {
        let mut e = self.engine.clone();
        e.set_input(RValue::Null);
        // An unknown rule is an error; a defined one is a value or undefined.
        e.eval_rule(format!("data.{rule}")).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Bacalhau's `ask_ns_test_password.rego` stores this hash for the password "password"
    /// and this salt: a known answer for Bacalhau's scrypt parameters.
    #[test]
    fn scrypt_matches_bacalhaus_known_answer() {
        assert_eq!(
            scrypt_b64("password", "d9ucnhE5kHEqm0YEWqN5qJmrHB+IDqjuPEwLkmZ9BGs=").unwrap(),
            "SN1U4DxjUhzyYG6p6nQ4by0IpudU8wdNs7Fpp42Ky9M="
        );
    }

    #[test]
    fn time_is_the_callers_and_undefined_is_none() {
        let p = Policy::new(
            "t.rego",
            "package t\nimport rego.v1\nnow := time.now_ns()\nlater := time.add_date(time.now_ns(), 0, 1, 0)\nyes if input.x == 1\n",
        )
        .unwrap();
        assert_eq!(p.eval("t.now", &json!({}), 42).unwrap(), Some(json!(42)));
        assert_eq!(p.eval("t.now", &json!({}), 7).unwrap(), Some(json!(7)));
        // 2024-01-01 plus one month is 2024-02-01.
        let jan = 1_704_067_200_000_000_000i64;
        assert_eq!(
            p.eval("t.later", &json!({}), jan).unwrap(),
            Some(json!(1_706_745_600_000_000_000i64))
        );
        assert_eq!(p.eval("t.yes", &json!({"x": 1}), 0).unwrap(), Some(json!(true)));
        assert_eq!(p.eval("t.yes", &json!({"x": 2}), 0).unwrap(), None);
        assert!(p.defines("t.yes"));
        assert!(!p.defines("t.nothing"));
        assert!(Policy::new("bad.rego", "package x\nallow if {").is_err());
    }

    #[test]
    fn jwt_builtins_sign_and_verify_inside_a_policy() {
        let dir = tempfile::tempdir().unwrap();
        let key = keys::load_or_create(&dir.path().join("k.pem")).unwrap();
        let p = Policy::new(
            "j.rego",
            r#"package j
import rego.v1
token := io.jwt.encode_sign({"alg": "RS256", "typ": "JWT"}, {"iss": "n", "aud": ["n"], "sub": input.who, "exp": 100}, input.signingKey)
check := io.jwt.decode_verify(input.token, input.constraints)
"#,
        )
        .unwrap();
        let t = p
            .eval("j.token", &json!({"who": "alice", "signingKey": keys::private_jwk(&key)}), 0)
            .unwrap()
            .unwrap();
        let constraints =
            json!({"cert": keys::public_jwks(&key.to_public_key()), "iss": "n", "aud": "n"});
        let input = json!({"token": t, "constraints": constraints});
        let v = p.eval("j.check", &input, 99_000_000_000).unwrap().unwrap();
        assert_eq!(v[0], true);
        assert_eq!(v[2]["sub"], "alice");
        // After exp (100 s), at the caller's time: invalid.
        let v = p.eval("j.check", &input, 100_000_000_000).unwrap().unwrap();
        assert_eq!(v, json!([false, {}, {}]));
    }
}
