//! Time as the core sees it: a number the driver hands in.
//!
//! Bacalhau uses two encodings on the wire: `CreateTime`/`ModifyTime` are int64 Unix
//! nanoseconds, while `JobHistory.Time`, `Event.Timestamp`, `WaitUntil`, `LastHeartbeat` and
//! `BuildDate` are RFC 3339 strings that Go's CLI parses into `time.Time` — an empty string breaks
//! it, and Go's zero time is `0001-01-01T00:00:00Z`. [`Timestamp`] is the first form;
//! [`WallTime`] is the second (with `None` standing for Go's zero time).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Nanoseconds since the Unix epoch (UTC). Encoded as a JSON integer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        i64::deserialize(d).map(Timestamp)
    }
}

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// From whole seconds since the epoch (saturating).
    pub fn from_secs(secs: i64) -> Self {
        Timestamp(secs.saturating_mul(1_000_000_000))
    }

    /// Nanoseconds since the epoch.
    pub fn as_nanos(self) -> i64 {
        self.0
    }

    /// Whole seconds since the epoch (rounded down).
    pub fn as_secs(self) -> i64 {
        self.0.div_euclid(1_000_000_000)
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        let diff = self.0.saturating_sub(earlier.0);
        Duration::from_nanos(u64::try_from(diff).unwrap_or(0))
    }

    /// RFC 3339 with Go's `RFC3339Nano` shape: UTC `Z`, fractional seconds without trailing
    /// zeros (and none at all on a whole second).
    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0);
        match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(t) => t.format(&Rfc3339).unwrap_or_else(|_| GO_ZERO_TIME.to_string()),
            Err(_) => GO_ZERO_TIME.to_string(),
        }
    }

    /// Parses an RFC 3339 string; `None` if it is malformed or outside the i64-nanosecond range.
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
        i64::try_from(t.unix_timestamp_nanos()).ok().map(Timestamp)
    }
}

/// `t + d` saturates at the end of representable time.
impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;

    fn add(self, d: Duration) -> Timestamp {
        let nanos = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(nanos))
    }
}

/// `t - d` saturates.
impl std::ops::Sub<Duration> for Timestamp {
    type Output = Timestamp;

    fn sub(self, d: Duration) -> Timestamp {
        let nanos = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_sub(nanos))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// Go's zero `time.Time`, which is what Bacalhau emits for "never".
pub const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A time encoded as an RFC 3339 string; `None` is Go's zero time (`0001-01-01T00:00:00Z`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WallTime(pub Option<Timestamp>);

impl WallTime {
    /// Go's zero time.
    pub const ZERO: WallTime = WallTime(None);

    /// A set time.
    pub fn at(t: Timestamp) -> Self {
        WallTime(Some(t))
    }

    /// Whether this is Go's zero time.
    pub fn is_zero(&self) -> bool {
        self.0.is_none()
    }
}

impl From<Timestamp> for WallTime {
    fn from(t: Timestamp) -> Self {
        WallTime(Some(t))
    }
}

impl Serialize for WallTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(t) => s.serialize_str(&t.to_rfc3339()),
            None => s.serialize_str(GO_ZERO_TIME),
        }
    }
}

impl<'de> Deserialize<'de> for WallTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() || s.starts_with("0001-01-01T00:00:00") {
            return Ok(WallTime::ZERO);
        }
        Timestamp::parse_rfc3339(&s)
            .map(WallTime::at)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid RFC 3339 time {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_go_rfc3339nano() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(Timestamp(1_500_000_000).to_rfc3339(), "1970-01-01T00:00:01.5Z");
        assert_eq!(
            Timestamp(1_700_000_000_123_456_789).to_rfc3339(),
            "2023-11-14T22:13:20.123456789Z"
        );
    }

    #[test]
    fn wall_time_round_trips_and_keeps_go_zero() {
        let t = WallTime::at(Timestamp(1_700_000_000_000_000_001));
        let s = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<WallTime>(&s).unwrap(), t);
        assert_eq!(serde_json::to_string(&WallTime::ZERO).unwrap(), "\"0001-01-01T00:00:00Z\"");
        assert_eq!(
            serde_json::from_str::<WallTime>("\"0001-01-01T00:00:00Z\"").unwrap(),
            WallTime::ZERO
        );
        assert!(serde_json::from_str::<WallTime>("\"yesterday\"").is_err());
    }
}
