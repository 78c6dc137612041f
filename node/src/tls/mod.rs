//! TLS for the API: the operator's certificate (`API.TLS.CertFile`/`KeyFile`, `gadus serve
//! --tlscert/--tlskey`) or one made for the node (`API.TLS.SelfSigned`, `--self-signed`),
//! served with rustls. The self-signed certificate is kept in `<data dir>/tls/` so clients
//! that trusted it (`--cacert`) keep trusting it across restarts; its SHA-256 fingerprint is
//! printed at start so an operator can compare it with what a client sees. Or one obtained
//! and renewed over ACME (`API.TLS.AutoCert`, `--autocert HOST`): see [`acme`].

pub mod acme;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::StartError;

/// The API's TLS, ready to serve.
pub struct Tls {
    /// The rustls configuration.
    pub config: Arc<rustls::ServerConfig>,
    /// What `gadus serve` prints about the certificate: its file and SHA-256 fingerprint, or
    /// where ACME obtains it.
    pub describe: String,
    /// The ACME manager to run beside the listener, with the certificate it starts from.
    acme: Option<(acme::AutoCert, Arc<acme::Resolver>, Option<acme::Validity>)>,
}

fn provider_builder()
-> Result<rustls::ConfigBuilder<rustls::ServerConfig, rustls::WantsVerifier>, StartError> {
    rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(tls_err)
}

fn tls_err(what: impl std::fmt::Display) -> StartError {
    StartError::Config(format!("API.TLS: {what}"))
}

/// The TLS the configuration asks for, if any.
pub fn setup(
    tls: &crate::config::TlsSection,
    data_dir: &Path,
    host: &str,
) -> Result<Option<Tls>, StartError> {
    if !tls.auto_cert.is_empty() {
        if tls.self_signed || !tls.cert_file.is_empty() || !tls.key_file.is_empty() {
            return Err(tls_err(
                "AutoCert obtains the certificate: it goes without CertFile, KeyFile and SelfSigned",
            ));
        }
        return autocert(tls, data_dir).map(Some);
    }
    let (cert_file, key_file, self_signed) = (&tls.cert_file, &tls.key_file, tls.self_signed);
    let (cert_path, key_path) = match (cert_file.is_empty(), key_file.is_empty(), self_signed) {
        (true, true, false) => return Ok(None),
        (false, false, _) => (PathBuf::from(cert_file), PathBuf::from(key_file)),
        (true, true, true) => self_signed_files(data_dir, host)?,
        _ => return Err(tls_err("CertFile and KeyFile go together (--tlscert and --tlskey)")),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| tls_err(format!("{}: {e}", cert_path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err(format!("{}: {e}", cert_path.display())))?;
    let leaf = certs
        .first()
        .ok_or_else(|| tls_err(format!("{} holds no certificate", cert_path.display())))?;
    let fingerprint = Sha256::digest(leaf.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| tls_err(format!("{}: {e}", key_path.display())))?;
    let mut config = provider_builder()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls_err(format!("{} and {}: {e}", cert_path.display(), key_path.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let describe = format!("{} (SHA-256 {fingerprint})", cert_path.display());
    Ok(Some(Tls { config: Arc::new(config), describe, acme: None }))
}

/// `API.TLS.AutoCert`: a resolver fed by the ACME manager, starting from the cached
/// certificate when it is still valid.
fn autocert(tls: &crate::config::TlsSection, data_dir: &Path) -> Result<Tls, StartError> {
    let host = tls.auto_cert.trim().trim_end_matches('.').to_ascii_lowercase();
    acme::check_host(&host).map_err(|e| tls_err(format!("AutoCert: {e}")))?;
    let directory = match tls.auto_cert_directory.trim() {
        "" => acme::LETS_ENCRYPT.to_string(),
        d => {
            let url =
                url::Url::parse(d).map_err(|e| tls_err(format!("AutoCertDirectory {d:?}: {e}")))?;
            if url.scheme() != "https" {
                return Err(tls_err(format!("AutoCertDirectory {d:?}: ACME is spoken over https")));
            }
            d.to_string()
        }
    };
    let ca_file = match tls.auto_cert_ca_file.trim() {
        "" => None,
        f => {
            let path = PathBuf::from(f);
            CertificateDer::from_pem_file(&path)
                .map_err(|e| tls_err(format!("AutoCertCAFile {}: {e}", path.display())))?;
            Some(path)
        }
    };
    let cache = match tls.auto_cert_cache_path.trim() {
        "" => data_dir.join("autocert-cache"),
        p => PathBuf::from(p),
    };
    let manager =
        acme::AutoCert { host: host.clone(), directory: directory.clone(), ca_file, cache };
    let resolver = Arc::new(acme::Resolver::default());
    let cached =
        manager.load_cached(&resolver).map_err(|e| tls_err(format!("AutoCertCachePath: {e}")))?;
    let mut config = provider_builder()?.with_no_client_auth().with_cert_resolver(resolver.clone());
    config.alpn_protocols =
        vec![b"h2".to_vec(), b"http/1.1".to_vec(), acme::ACME_TLS_ALPN.to_vec()];
    let describe = format!(
        "ACME for {host} from {directory} ({}; cached in {})",
        if cached.is_some() { "cached certificate" } else { "obtaining one now" },
        manager.cache.display()
    );
    Ok(Tls { config: Arc::new(config), describe, acme: Some((manager, resolver, cached)) })
}

/// `<data dir>/tls/self-signed.{crt,key}`, made for localhost, loopback and `host` when absent.
fn self_signed_files(data_dir: &Path, host: &str) -> Result<(PathBuf, PathBuf), StartError> {
    let dir = data_dir.join("tls");
    let (crt, key) = (dir.join("self-signed.crt"), dir.join("self-signed.key"));
    if crt.exists() && key.exists() {
        return Ok((crt, key));
    }
    std::fs::create_dir_all(&dir).map_err(|e| tls_err(format!("{}: {e}", dir.display())))?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let unspecified = host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified());
    if !host.is_empty() && !unspecified && !names.iter().any(|n| n == host) {
        names.push(host.to_string());
    }
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() && !names.iter().any(|n| n == h) {
            names.push(h.to_string());
        }
    }
    let made = rcgen::generate_simple_self_signed(names).map_err(tls_err)?;
    crate::auth::keys::write_private(&key, made.signing_key.serialize_pem().as_bytes())
        .map_err(|e| tls_err(format!("{}: {e}", key.display())))?;
    std::fs::write(&crt, made.cert.pem())
        .map_err(|e| tls_err(format!("{}: {e}", crt.display())))?;
    Ok((crt, key))
}

/// Serves `app` over TLS on `listener` (through [`crate::listener`]) until the task is
/// aborted. With ACME, the certificate manager runs in the same task, so aborting it stops both.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Tls,
    limits: crate::listener::Limits,
    shared: Arc<crate::runtime::Shared>,
) {
    let acme = async move {
        match tls.acme {
            Some((manager, resolver, cached)) => manager.run(resolver, cached).await,
            None => std::future::pending().await,
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
    tokio::select! {
        () = crate::listener::serve(listener, app, Some(acceptor), limits, shared) => {}
        () = acme => {}
    }
}
