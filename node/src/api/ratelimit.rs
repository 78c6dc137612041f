//! Per-client limits on writes (`API.WritesPerSecond`): each client address gets a token
//! bucket (that many tokens a second, twice that as burst); a write (any method but GET, HEAD
//! and OPTIONS) takes a token or is answered 429 with `Retry-After`. Reads are never limited.
//! Addresses in `API.RateLimitExempt` (loopback by default: the node's own CLI and local
//! scripts) are not limited. An IPv6 client is its /64, as a host usually holds a whole one.
//! At most [`MAX_CLIENTS`] buckets are kept; full (idle) buckets are forgotten first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept at most.
const MAX_CLIENTS: usize = 65_536;

/// An address range, `a.b.c.d/n` or `x::y/n` (a bare address is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: u128,
    prefix: u32,
    v6: bool,
}

fn bits(ip: IpAddr) -> (u128, bool) {
    match ip {
        IpAddr::V4(a) => (u128::from(u32::from(a)), false),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => (u128::from(u32::from(v4)), false),
            None => (u128::from(a), true),
        },
    }
}

fn mask(prefix: u32, v6: bool) -> u128 {
    let (width, full) = if v6 { (128, u128::MAX) } else { (32, u128::from(u32::MAX)) };
    if prefix == 0 {
        return 0;
    }
    debug_assert!(prefix <= width);
    (full << (width - prefix)) & full
}

impl Cidr {
    /// Parses `addr[/prefix]`.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let ip: IpAddr = addr.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
        let (net, v6) = bits(ip);
        let width = if v6 { 128 } else { 32 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u32>().map_err(|e| format!("{s:?}: {e}"))?,
            None => width,
        };
        if prefix > width {
            return Err(format!("{s:?}: prefix longer than {width} bits"));
        }
        Ok(Cidr { net: net & mask(prefix, v6), prefix, v6 })
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (b, v6) = bits(ip);
        v6 == self.v6 && b & mask(self.prefix, v6) == self.net
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The limiter of one node.
pub struct WriteLimiter {
    per_sec: f64,
    burst: f64,
    exempt: Vec<Cidr>,
    buckets: Mutex<HashMap<(u128, bool), Bucket>>,
}

impl WriteLimiter {
    /// `per_sec` writes a second per client (0 = no limit), `exempt` ranges not limited.
    pub fn new(per_sec: u32, exempt: &[String]) -> Result<WriteLimiter, String> {
        let exempt = exempt.iter().map(|c| Cidr::parse(c)).collect::<Result<Vec<_>, _>>()?;
        let per_sec = f64::from(per_sec);
        Ok(WriteLimiter { per_sec, burst: per_sec * 2.0, exempt, buckets: Mutex::default() })
    }

    /// Takes a token for a write from `ip` at `now`, or says how long until one is free.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.per_sec <= 0.0 || self.exempt.iter().any(|c| c.contains(ip)) {
            return Ok(());
        }
        let (b, v6) = bits(ip);
        let key = (if v6 { b & mask(64, true) } else { b }, v6);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&key) {
            let (per_sec, burst) = (self.per_sec, self.burst);
            buckets.retain(|_, k| {
                k.tokens + now.saturating_duration_since(k.at).as_secs_f64() * per_sec < burst
            });
            if buckets.len() >= MAX_CLIENTS {
                // Every bucket is in use: a newcomer waits like a client with an empty one.
                return Err(Duration::from_secs(1));
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket { tokens: self.burst, at: now });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * self.per_sec;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            debug_assert!(bucket.tokens >= 0.0 && bucket.tokens <= self.burst);
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_match_what_they_say() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()), "v4-mapped v6 is v4");
        let lo6 = Cidr::parse("::1/128").unwrap();
        assert!(lo6.contains("::1".parse().unwrap()));
        assert!(!lo6.contains("::2".parse().unwrap()));
        assert!(!lo6.contains("127.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("1.2.3.4").unwrap().contains("1.2.3.4".parse().unwrap()));
        for bad in ["1.2.3.4/33", "::/129", "nope", "1.2.3.4/x", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_client_gets_its_burst_then_its_rate_and_others_are_not_affected() {
        let l = WriteLimiter::new(5, &["127.0.0.0/8".into()]).unwrap();
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for i in 0..10 {
            assert_eq!(l.admit(a, t0), Ok(()), "burst write {i}");
        }
        let wait = l.admit(a, t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(200), "{wait:?}");
        assert_eq!(l.admit(a, t0 + Duration::from_millis(200)), Ok(()), "refilled at 5/s");
        assert_eq!(l.admit("192.0.2.2".parse().unwrap(), t0), Ok(()), "another client");
        for _ in 0..100 {
            assert_eq!(l.admit("127.0.0.1".parse().unwrap(), t0), Ok(()), "exempt");
        }
        // One IPv6 /64 is one client.
        let l = WriteLimiter::new(1, &[]).unwrap();
        assert!(l.admit("2001:db8::1".parse().unwrap(), t0).is_ok());
        assert!(l.admit("2001:db8::2".parse().unwrap(), t0).is_ok());
        assert!(l.admit("2001:db8::3".parse().unwrap(), t0).is_err());
        assert!(l.admit("2001:db8:0:1::1".parse().unwrap(), t0).is_ok(), "another /64");
        assert!(WriteLimiter::new(0, &[]).unwrap().admit("192.0.2.1".parse().unwrap(), t0).is_ok());
    }
}
