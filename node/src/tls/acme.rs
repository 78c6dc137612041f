//! ACME (`gadus serve --autocert HOST`, `API.TLS.AutoCert`): the node obtains the API's
//! certificate from an ACME CA (RFC 8555; Let's Encrypt unless `API.TLS.AutoCertDirectory`
//! names another) and renews it before it expires.
//!
//! Control of HOST is proven with TLS-ALPN-01 (RFC 8737) on the API's own listener: the CA
//! connects to HOST:443 offering only the ALPN protocol `acme-tls/1`, and [`Resolver`] shows it
//! a throw-away certificate that carries the digest of the key authorization. So the API must
//! be reachable at HOST:443 (listen there, or forward 443 to the API port), as with Go's
//! autocert, which Bacalhau uses. No second port and no plain-HTTP listener is opened.
//!
//! The account and the certificate are cached in `API.TLS.AutoCertCachePath`
//! (`<data dir>/autocert-cache`, files mode 0600): a restart serves the cached certificate at
//! once, even while the CA is unreachable, and does not spend the CA's rate limits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

/// The ALPN protocol of TLS-ALPN-01 validation connections (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Let's Encrypt's production directory: the default CA, as Go's autocert.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Renew this long before expiry at most (Go's autocert default), or when a third of the
/// certificate's lifetime is left if that comes later (short-lived certificates).
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Why a certificate could not be obtained. The CA's own problem documents are kept whole:
/// they say which check failed (e.g. the validation connection was refused).
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The CA answered with an error, or could not be reached.
    #[error("ACME CA: {0}")]
    Ca(#[from] instant_acme::Error),
    /// The CA refused the order or an authorization.
    #[error("ACME order for {host}: {status}")]
    Refused { host: String, status: String },
    /// Making keys or certificates, or reading what the CA sent.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The cache directory could not be written.
    #[error("cache {path}: {error}")]
    Cache { path: String, error: String },
}

/// Picks the certificate for each handshake: the challenge certificate for validation
/// connections (`acme-tls/1`), the current certificate for everyone else.
#[derive(Debug, Default)]
pub struct Resolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    challenges: Mutex<BTreeMap<String, Arc<CertifiedKey>>>,
}

impl Resolver {
    fn set_current(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(key);
    }

    fn has_current(&self) -> bool {
        self.current.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    fn set_challenge(&self, host: &str, key: Option<Arc<CertifiedKey>>) {
        let mut c = self.challenges.lock().unwrap_or_else(|e| e.into_inner());
        match key {
            Some(k) => c.insert(host.to_ascii_lowercase(), k),
            None => c.remove(&host.to_ascii_lowercase()),
        };
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let validation =
            hello.alpn().is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if validation {
            // RFC 8737 §3: a validation handshake names the host in SNI and gets only the
            // challenge certificate (none when no challenge is pending).
            let name = hello.server_name()?.to_ascii_lowercase();
            return self.challenges.lock().unwrap_or_else(|e| e.into_inner()).get(&name).cloned();
        }
        // Before the first certificate arrives there is nothing to serve: the handshake fails.
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The ACME settings of a node.
#[derive(Clone, Debug)]
pub struct AutoCert {
    /// The host name the certificate is for.
    pub host: String,
    /// The ACME directory URL.
    pub directory: String,
    /// A PEM root for the CA's own HTTPS, when it is not publicly trusted.
    pub ca_file: Option<PathBuf>,
    /// The cache directory.
    pub cache: PathBuf,
}

/// `account.json` in the cache: the account is tied to the directory it was made on.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CachedAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// A host name an ACME CA can issue for: a DNS name, not an IP address or a wildcard.
pub fn check_host(host: &str) -> Result<(), String> {
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!("{host:?} is an IP address; ACME certificates name a DNS host"));
    }
    if host.len() > 253 || !host.split('.').all(valid_label) {
        return Err(format!("{host:?} is not a DNS host name"));
    }
    Ok(())
}

impl AutoCert {
    fn cert_path(&self) -> PathBuf {
        self.cache.join(format!("{}.pem", self.host.to_ascii_lowercase()))
    }

    fn account_path(&self) -> PathBuf {
        self.cache.join("account.json")
    }

    /// Creates the cache directory and installs a cached certificate that is still valid.
    /// Returns the cached certificate's validity, if one was installed.
    pub fn load_cached(&self, resolver: &Resolver) -> Result<Option<Validity>, AcmeError> {
        std::fs::create_dir_all(&self.cache).map_err(|e| cache_err(&self.cache, e))?;
        let _ = std::fs::set_permissions(
            &self.cache,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        );
        let Ok(pem) = std::fs::read(self.cert_path()) else { return Ok(None) };
        match certified_key(&pem, &self.host) {
            Ok((key, validity)) if validity.not_after > SystemTime::now() => {
                resolver.set_current(key);
                Ok(Some(validity))
            }
            Ok(_) => Ok(None),
            Err(e) => {
                tracing::warn!(path = %self.cert_path().display(), error = %e, "ignoring the cached certificate");
                Ok(None)
            }
        }
    }

    /// Keeps a valid certificate in `resolver` for as long as the node runs: obtains one now
    /// unless a cached one is far from expiry, then renews it in time. Failures are logged and
    /// retried with a growing pause (1 min … 1 h), keeping the CA's rate limits in mind.
    pub async fn run(self, resolver: Arc<Resolver>, mut expiry: Option<Validity>) {
        let mut failures = 0u32;
        loop {
            if let Some(v) = &expiry {
                let wait = v.renew_at().duration_since(SystemTime::now()).unwrap_or_default();
                tokio::time::sleep(wait).await;
            }
            tracing::info!(host = %self.host, directory = %self.directory, "obtaining a TLS certificate over ACME");
            match self.obtain(&resolver).await {
                Ok(v) => {
                    failures = 0;
                    tracing::info!(host = %self.host, not_after = ?v.not_after, "TLS certificate obtained over ACME");
                    eprintln!(
                        "TLS certificate for {} obtained over ACME (cached in {})",
                        self.host,
                        self.cache.display()
                    );
                    expiry = Some(v);
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let pause = Duration::from_secs(60u64 << failures.min(6).saturating_sub(1))
                        .min(Duration::from_secs(3600));
                    tracing::warn!(host = %self.host, error = %e, retry_in = ?pause, have_certificate = resolver.has_current(), "ACME certificate not obtained");
                    eprintln!("ACME: no certificate for {} yet: {e}", self.host);
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    async fn account(&self) -> Result<Account, AcmeError> {
        let builder = || match &self.ca_file {
            Some(root) => Account::builder_with_root(root),
            None => Account::builder(),
        };
        if let Ok(bytes) = std::fs::read(self.account_path())
            && let Ok(cached) = serde_json::from_slice::<CachedAccount>(&bytes)
            && cached.directory == self.directory
        {
            return Ok(builder()?.from_credentials(cached.credentials).await?);
        }
        let new =
            NewAccount { contact: &[], terms_of_service_agreed: true, only_return_existing: false };
        let (account, credentials) = builder()?.create(&new, self.directory.clone(), None).await?;
        let cached = CachedAccount { directory: self.directory.clone(), credentials };
        let json = serde_json::to_vec_pretty(&cached)
            .map_err(|e| AcmeError::Certificate(e.to_string()))?;
        crate::auth::keys::write_private(&self.account_path(), &json)
            .map_err(|e| cache_err(&self.account_path(), e))?;
        Ok(account)
    }

    /// One order: TLS-ALPN-01 for the host, then finalize, download, cache and install.
    async fn obtain(&self, resolver: &Resolver) -> Result<Validity, AcmeError> {
        let account = self.account().await?;
        let identifiers = [Identifier::Dns(self.host.clone())];
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(AcmeError::Refused {
                        host: self.host.clone(),
                        status: format!("authorization {other:?}"),
                    });
                }
            }
            let mut challenge =
                authz.challenge(ChallengeType::TlsAlpn01).ok_or_else(|| AcmeError::Refused {
                    host: self.host.clone(),
                    status: "the CA offers no tls-alpn-01 challenge".into(),
                })?;
            let proof = challenge_key(&self.host, challenge.key_authorization().digest().as_ref())?;
            resolver.set_challenge(&self.host, Some(proof));
            challenge.set_ready().await?;
        }
        let ready = order.poll_ready(&RetryPolicy::new().timeout(Duration::from_secs(120))).await;
        resolver.set_challenge(&self.host, None);
        let status = ready?;
        if status != OrderStatus::Ready {
            let detail = order.state().error.as_ref().map(|p| p.to_string()).unwrap_or_default();
            return Err(AcmeError::Refused {
                host: self.host.clone(),
                status: format!("order {status:?} {detail}").trim_end().to_string(),
            });
        }
        let key_pem = order.finalize().await?;
        let chain_pem =
            order.poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(120))).await?;
        let pem = format!("{key_pem}{chain_pem}");
        let (key, validity) = certified_key(pem.as_bytes(), &self.host)?;
        crate::auth::keys::write_private(&self.cert_path(), pem.as_bytes())
            .map_err(|e| cache_err(&self.cert_path(), e))?;
        resolver.set_current(key);
        Ok(validity)
    }
}

fn cache_err(path: &Path, e: impl std::fmt::Display) -> AcmeError {
    AcmeError::Cache { path: path.display().to_string(), error: e.to_string() }
}

/// When a certificate was issued and when it expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// notBefore.
    pub not_before: SystemTime,
    /// notAfter.
    pub not_after: SystemTime,
}

impl Validity {
    /// When to renew: [`RENEW_BEFORE`] before expiry, or a third of the lifetime before it
    /// when the certificate lives shorter than 90 days.
    pub fn renew_at(&self) -> SystemTime {
        let lifetime = self.not_after.duration_since(self.not_before).unwrap_or_default();
        let margin = RENEW_BEFORE.min(lifetime / 3);
        self.not_after.checked_sub(margin).unwrap_or(self.not_before)
    }
}

/// A key and chain in PEM (as cached: key first, then the chain from the leaf), checked to
/// name `host`, ready for rustls, with the leaf's validity.
fn certified_key(pem: &[u8], host: &str) -> Result<(Arc<CertifiedKey>, Validity), AcmeError> {
    let bad = |what: String| AcmeError::Certificate(what);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("reading the chain: {e}")))?;
    let leaf = chain.first().ok_or_else(|| bad("no certificate in the chain".into()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| bad(format!("parsing the certificate: {e}")))?;
    let names_host = parsed.subject_alternative_name().ok().flatten().is_some_and(|san| {
        san.value.general_names.iter().any(|n| {
            matches!(n, x509_parser::extensions::GeneralName::DNSName(d) if d.eq_ignore_ascii_case(host))
        })
    });
    if !names_host {
        return Err(bad(format!("the certificate does not name {host}")));
    }
    let at = |t: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
    let validity = Validity {
        not_before: at(parsed.validity().not_before.timestamp()),
        not_after: at(parsed.validity().not_after.timestamp()),
    };
    let key =
        PrivateKeyDer::from_pem_slice(pem).map_err(|e| bad(format!("reading the key: {e}")))?;
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
        .map_err(|e| bad(format!("the key: {e}")))?;
    Ok((Arc::new(CertifiedKey::new(chain, signer)), validity))
}

/// The TLS-ALPN-01 challenge certificate: self-signed for `host`, with the critical
/// id-pe-acmeIdentifier extension holding SHA-256 of the key authorization (RFC 8737 §3).
fn challenge_key(host: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, AcmeError> {
    let bad = |e: rcgen::Error| AcmeError::Certificate(format!("challenge certificate: {e}"));
    let mut params = rcgen::CertificateParams::new(vec![host.to_string()]).map_err(bad)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(bad)?;
    let cert = params.self_signed(&key).map_err(bad)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der)
        .map_err(|e| AcmeError::Certificate(format!("challenge key: {e}")))?;
    Ok(Arc::new(CertifiedKey::new(vec![cert.der().clone()], signer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_an_acme_ca_can_issue_for() {
        for ok in ["gadus.example.org", "node-1.test", "localhost"] {
            assert_eq!(check_host(ok), Ok(()), "{ok}");
        }
        for bad in ["", "127.0.0.1", "::1", "*.example.org", "a..b", "-a.b", "a_b.c", "a b"] {
            assert!(check_host(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn renewal_comes_thirty_days_early_or_at_two_thirds_of_a_short_life() {
        let day = Duration::from_secs(24 * 3600);
        let t0 = UNIX_EPOCH + 1000 * day;
        let lets_encrypt = Validity { not_before: t0, not_after: t0 + 90 * day };
        assert_eq!(lets_encrypt.renew_at(), t0 + 60 * day);
        let year = Validity { not_before: t0, not_after: t0 + 365 * day };
        assert_eq!(year.renew_at(), t0 + 335 * day);
        let six_days = Validity { not_before: t0, not_after: t0 + 6 * day };
        assert_eq!(six_days.renew_at(), t0 + 4 * day);
        let inverted = Validity { not_before: t0, not_after: t0 - day };
        assert!(inverted.renew_at() <= t0);
    }

    #[test]
    fn challenges_are_keyed_by_host_whatever_its_case_and_removed_after_use() {
        // The resolver is exercised through a real rustls handshake in the pebble test;
        // here: the challenge table is keyed case-insensitively and emptied after use.
        let r = Resolver::default();
        let key = challenge_key("Node.Example.org", &[7; 32]).unwrap();
        r.set_challenge("Node.Example.org", Some(key));
        assert!(r.challenges.lock().unwrap().contains_key("node.example.org"));
        r.set_challenge("node.example.org", None);
        assert!(r.challenges.lock().unwrap().is_empty());
        assert!(!r.has_current());
    }

    #[test]
    fn a_cached_pair_must_name_the_host() {
        let made = rcgen::generate_simple_self_signed(vec!["a.example.org".into()]).unwrap();
        let pem = format!("{}{}", made.signing_key.serialize_pem(), made.cert.pem());
        let (_, v) = certified_key(pem.as_bytes(), "A.example.org").unwrap();
        assert!(v.not_after > v.not_before);
        let err = certified_key(pem.as_bytes(), "b.example.org").unwrap_err();
        assert!(err.to_string().contains("does not name b.example.org"), "{err}");
        assert!(certified_key(b"junk", "a.example.org").is_err());
    }
}
