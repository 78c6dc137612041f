//! Label selectors: node constraints on jobs and the `labels=` filter on job listings.
//!
//! Two forms name the same thing: the structured `{Key, Operator, Values}` list of a job spec
//! and the Kubernetes query form used by the CLI's `--constraints` and the API's `labels=`
//! (`region=eu,gpu in (a100,h100),!spot,zone notin (x)`). Keys prefixed `favour_` are *soft*:
//! they rank matching nodes higher instead of filtering ([`Constraints::split`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::job::null_as_default;

/// The Kubernetes selection operators, with their wire spellings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    /// `=`
    Equals,
    /// `==`
    DoubleEquals,
    /// `!=`
    NotEquals,
    /// `in`
    In,
    /// `notin`
    NotIn,
    /// `exists`
    Exists,
    /// `!` (does not exist)
    DoesNotExist,
    /// `gt`
    GreaterThan,
    /// `lt`
    LessThan,
}

impl Operator {
    const ALL: [Operator; 9] = [
        Operator::Equals,
        Operator::DoubleEquals,
        Operator::NotEquals,
        Operator::In,
        Operator::NotIn,
        Operator::Exists,
        Operator::DoesNotExist,
        Operator::GreaterThan,
        Operator::LessThan,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => "in",
            Operator::NotIn => "notin",
            Operator::Exists => "exists",
            Operator::DoesNotExist => "!",
            Operator::GreaterThan => "gt",
            Operator::LessThan => "lt",
        }
    }

    /// Parses a wire spelling (case-insensitive for the word forms).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        Self::ALL.iter().copied().find(|o| o.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Operator {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Operator {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Operator::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown selector operator {s:?} (expected =, ==, !=, in, notin, exists, !, gt, lt)"
            ))
        })
    }
}

/// One requirement on node labels (Bacalhau `models.LabelSelectorRequirement`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LabelSelectorRequirement {
    /// Label key.
    #[serde(default)]
    pub key: String,
    /// How to compare.
    pub operator: Operator,
    /// Values (`in`/`notin` need ≥ 1, `exists`/`!` none, the rest exactly 1).
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// The prefix that turns a constraint into a soft preference.
pub const FAVOUR_PREFIX: &str = "favour_";

/// Longest label key or value accepted (Kubernetes uses 63 for names, 253 for prefixes).
pub const MAX_LABEL_LEN: usize = 317;

impl LabelSelectorRequirement {
    /// A requirement.
    pub fn new(key: impl Into<String>, operator: Operator, values: Vec<String>) -> Self {
        LabelSelectorRequirement { key: key.into(), operator, values }
    }

    /// Checks the shape: key present and well-formed, value count fits the operator.
    pub fn check(&self) -> Result<(), String> {
        check_key(&self.key)?;
        let n = self.values.len();
        match self.operator {
            Operator::In | Operator::NotIn if n == 0 => {
                return Err(format!("operator {} needs at least one value", self.operator));
            }
            Operator::Exists | Operator::DoesNotExist if n != 0 => {
                return Err(format!("operator {} takes no values", self.operator));
            }
            Operator::Equals
            | Operator::DoubleEquals
            | Operator::NotEquals
            | Operator::GreaterThan
            | Operator::LessThan
                if n != 1 =>
            {
                return Err(format!("operator {} needs exactly one value", self.operator));
            }
            _ => {}
        }
        for v in &self.values {
            check_value(v)?;
            if matches!(self.operator, Operator::GreaterThan | Operator::LessThan)
                && v.parse::<i64>().is_err()
            {
                return Err(format!(
                    "operator {} needs an integer value, got {v:?}",
                    self.operator
                ));
            }
        }
        Ok(())
    }

    /// Whether a node with `labels` satisfies this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let have = labels.get(&self.key);
        match self.operator {
            Operator::Equals | Operator::DoubleEquals | Operator::In => {
                have.is_some_and(|v| self.values.iter().any(|w| w == v))
            }
            Operator::NotEquals | Operator::NotIn => {
                have.is_none_or(|v| !self.values.iter().any(|w| w == v))
            }
            Operator::Exists => have.is_some(),
            Operator::DoesNotExist => have.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(have), Some(want)) = (have, self.values.first()) else {
                    return false;
                };
                let (Ok(have), Ok(want)) = (have.parse::<i64>(), want.parse::<i64>()) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan { have > want } else { have < want }
            }
        }
    }

    /// Whether this is a `favour_` soft preference.
    pub fn is_soft(&self) -> bool {
        self.key.starts_with(FAVOUR_PREFIX)
    }
}

impl fmt::Display for LabelSelectorRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.operator {
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::In | Operator::NotIn => {
                write!(f, "{} {} ({})", self.key, self.operator, self.values.join(","))
            }
            Operator::GreaterThan => write!(f, "{}>{}", self.key, self.values.join(",")),
            Operator::LessThan => write!(f, "{}<{}", self.key, self.values.join(",")),
            op => write!(f, "{}{}{}", self.key, op, self.values.join(",")),
        }
    }
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("selector key cannot be blank".to_string());
    }
    if key.len() > MAX_LABEL_LEN {
        return Err(format!("selector key longer than {MAX_LABEL_LEN} bytes"));
    }
    if !key.chars().all(is_label_char) {
        return Err(format!(
            "selector key {key:?} may contain only letters, digits, '-', '_', '.' and '/'"
        ));
    }
    Ok(())
}

fn check_value(v: &str) -> Result<(), String> {
    if v.len() > MAX_LABEL_LEN {
        return Err(format!("selector value longer than {MAX_LABEL_LEN} bytes"));
    }
    if !v.chars().all(is_label_char) {
        return Err(format!(
            "selector value {v:?} may contain only letters, digits, '-', '_', '.' and '/'"
        ));
    }
    Ok(())
}

/// A malformed query-form selector, with the byte offset where parsing stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector at byte {offset}: {reason}")]
pub struct SelectorError {
    /// Byte offset into the input.
    pub offset: usize,
    /// What was wrong.
    pub reason: String,
}

/// Longest query-form selector accepted (bounds the work done on untrusted input).
pub const MAX_SELECTOR_LEN: usize = 8 * 1024;

/// Parses the Kubernetes query form: `a=b,c!=d,e in (f,g),h notin (i),j,!k,l>3,m<4`.
pub fn parse_selector(input: &str) -> Result<Vec<LabelSelectorRequirement>, SelectorError> {
    if input.len() > MAX_SELECTOR_LEN {
        return Err(SelectorError {
            offset: 0,
            reason: format!("longer than {MAX_SELECTOR_LEN} bytes"),
        });
    }
    let mut p = Parser { s: input, pos: 0 };
    let mut out = Vec::new();
    p.skip_ws();
    if p.at_end() {
        return Ok(out);
    }
    loop {
        let req = p.requirement()?;
        req.check().map_err(|reason| SelectorError { offset: p.pos, reason })?;
        out.push(req);
        p.skip_ws();
        if p.at_end() {
            return Ok(out);
        }
        p.expect(',')?;
        p.skip_ws();
    }
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if !c.is_whitespace() {
                break;
            }
            self.pos += c.len_utf8();
        }
    }

    fn err(&self, reason: impl Into<String>) -> SelectorError {
        SelectorError { offset: self.pos, reason: reason.into() }
    }

    fn expect(&mut self, want: char) -> Result<(), SelectorError> {
        match self.peek() {
            Some(c) if c == want => {
                self.pos += c.len_utf8();
                Ok(())
            }
            Some(c) => Err(self.err(format!("expected '{want}', found '{c}'"))),
            None => Err(self.err(format!("expected '{want}', found end of input"))),
        }
    }

    /// A run of label characters (possibly empty).
    fn word(&mut self) -> &str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if !is_label_char(c) {
                break;
            }
            self.pos += c.len_utf8();
        }
        &self.s[start..self.pos]
    }

    fn requirement(&mut self) -> Result<LabelSelectorRequirement, SelectorError> {
        if self.peek() == Some('!') {
            self.pos += 1;
            self.skip_ws();
            let key = self.word().to_string();
            if key.is_empty() {
                return Err(self.err("expected a key after '!'"));
            }
            return Ok(LabelSelectorRequirement::new(key, Operator::DoesNotExist, vec![]));
        }
        let key = self.word().to_string();
        if key.is_empty() {
            return Err(match self.peek() {
                Some(c) => self.err(format!("expected a key, found '{c}'")),
                None => self.err("expected a key, found end of input"),
            });
        }
        self.skip_ws();
        let rest = &self.s[self.pos..];
        let op = if rest.starts_with("==") {
            self.pos += 2;
            Operator::DoubleEquals
        } else if rest.starts_with("!=") {
            self.pos += 2;
            Operator::NotEquals
        } else if rest.starts_with('=') {
            self.pos += 1;
            Operator::Equals
        } else if rest.starts_with('>') {
            self.pos += 1;
            Operator::GreaterThan
        } else if rest.starts_with('<') {
            self.pos += 1;
            Operator::LessThan
        } else if rest.is_empty() || rest.starts_with(',') {
            return Ok(LabelSelectorRequirement::new(key, Operator::Exists, vec![]));
        } else {
            let save = self.pos;
            let word = self.word().to_ascii_lowercase();
            let op = match word.as_str() {
                "in" => Operator::In,
                "notin" => Operator::NotIn,
                _ => {
                    self.pos = save;
                    return Err(self.err(format!(
                        "expected an operator (=, ==, !=, >, <, in, notin) after key {key:?}"
                    )));
                }
            };
            self.skip_ws();
            let values = self.value_set()?;
            return Ok(LabelSelectorRequirement::new(key, op, values));
        };
        self.skip_ws();
        let value = self.word().to_string();
        Ok(LabelSelectorRequirement::new(key, op, vec![value]))
    }

    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        self.expect('(')?;
        let mut values = Vec::new();
        loop {
            self.skip_ws();
            let v = self.word().to_string();
            self.skip_ws();
            match self.peek() {
                Some(',') => {
                    self.pos += 1;
                    values.push(v);
                }
                Some(')') => {
                    // Like Kubernetes, `in ()` is the set holding the empty value.
                    self.pos += 1;
                    values.push(v);
                    return Ok(values);
                }
                Some(c) => return Err(self.err(format!("expected ',' or ')', found '{c}'"))),
                None => return Err(self.err("unterminated value list: expected ')'")),
            }
        }
    }
}

/// A job's constraints split into hard filters and soft (`favour_`) preferences.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Constraints {
    /// Nodes must satisfy all of these.
    pub hard: Vec<LabelSelectorRequirement>,
    /// Nodes satisfying these rank higher; keys are stored *without* the `favour_` prefix.
    pub soft: Vec<LabelSelectorRequirement>,
}

impl Constraints {
    /// Splits a constraint list; `favour_key` becomes a soft requirement on `key`.
    pub fn split(all: &[LabelSelectorRequirement]) -> Self {
        let mut out = Constraints::default();
        for r in all {
            match r.key.strip_prefix(FAVOUR_PREFIX) {
                Some(stripped) => {
                    let mut soft = r.clone();
                    soft.key = stripped.to_string();
                    out.soft.push(soft);
                }
                None => out.hard.push(r.clone()),
            }
        }
        out
    }

    /// Whether `labels` satisfy every hard requirement.
    pub fn admits(&self, labels: &BTreeMap<String, String>) -> bool {
        self.hard.iter().all(|r| r.matches(labels))
    }

    /// How many soft requirements `labels` satisfy.
    pub fn preference(&self, labels: &BTreeMap<String, String>) -> usize {
        self.soft.iter().filter(|r| r.matches(labels)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn parses_the_query_form() {
        let got = parse_selector("region=eu,gpu in (a100,h100),!spot,zone notin (x)").unwrap();
        assert_eq!(
            got,
            vec![
                LabelSelectorRequirement::new("region", Operator::Equals, vec!["eu".into()]),
                LabelSelectorRequirement::new(
                    "gpu",
                    Operator::In,
                    vec!["a100".into(), "h100".into()]
                ),
                LabelSelectorRequirement::new("spot", Operator::DoesNotExist, vec![]),
                LabelSelectorRequirement::new("zone", Operator::NotIn, vec!["x".into()]),
            ]
        );
        let got = parse_selector(" a == b , c != d, e, f>3, g < 10 ").unwrap();
        let ops: Vec<_> = got.iter().map(|r| r.operator).collect();
        assert_eq!(
            ops,
            vec![
                Operator::DoubleEquals,
                Operator::NotEquals,
                Operator::Exists,
                Operator::GreaterThan,
                Operator::LessThan
            ]
        );
        assert!(parse_selector("").unwrap().is_empty());
        assert_eq!(parse_selector("a in ()").unwrap()[0].values, vec![String::new()]);
    }

    #[test]
    fn rejects_malformed_selectors_with_a_position() {
        for bad in
            ["=x", "a in b", "a in (b", "a,,b", "!", "a b", "a=b c", "a>x", "a@b=c", "a in (b c)"]
        {
            let e = parse_selector(bad).expect_err(bad);
            assert!(e.offset <= bad.len(), "{bad}: {e}");
        }
    }

    #[test]
    fn matching_follows_kubernetes_semantics() {
        let node = labels(&[("region", "eu"), ("gpu", "a100"), ("cores", "16")]);
        let sel = |s| parse_selector(s).unwrap();
        let all = |s| sel(s).iter().all(|r: &LabelSelectorRequirement| r.matches(&node));
        assert!(all("region=eu,gpu in (a100,h100),!spot,zone notin (x)"));
        assert!(!all("region!=eu"));
        assert!(all("cores>8,cores<32"));
        assert!(!all("cores>16"));
        assert!(!all("missing"));
    }

    #[test]
    fn favour_keys_are_soft() {
        let c = Constraints::split(&parse_selector("region=eu,favour_gpu=a100").unwrap());
        assert_eq!(c.hard.len(), 1);
        assert_eq!(c.soft[0].key, "gpu");
        let node = labels(&[("region", "eu"), ("gpu", "a100")]);
        assert!(c.admits(&node));
        assert_eq!(c.preference(&node), 1);
        assert!(c.admits(&labels(&[("region", "eu")])));
    }
}
