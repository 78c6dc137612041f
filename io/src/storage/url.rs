//! The `urlDownload` input source: fetch one http(s) URL into the execution's work folder.
//!
//! A job spec names the URL, so the URL is attacker-controlled, and the node fetching it sits
//! inside someone's network: without care it is an SSRF proxy to the cloud metadata service
//! (169.254.169.254), the node's own API on loopback, or the operator's private LAN. The guard:
//!
//! * only `http` and `https`; the URL is parsed WHATWG-style by the `url` crate, which turns
//!   odd IPv4 spellings (`2130706433`, `0177.0.0.1`, `0x7f.1`) into the address a browser —
//!   and our HTTP client — would really reach, so the check sees 127.0.0.1;
//! * the host is resolved here, every resolved address is classified ([`classify`]), and the
//!   request is refused if any of them is refused by the [`UrlPolicy`] (loopback, private,
//!   CGNAT, link-local, unspecified, multicast, broadcast, reserved; IPv4 embedded in IPv6 is
//!   judged as IPv4);
//! * the HTTP client is then pinned to exactly the vetted addresses (`resolve_to_addrs`), with
//!   proxies disabled, so a second DNS answer (rebinding) or an `HTTP_PROXY` variable cannot
//!   send the connection elsewhere;
//! * redirects are followed by hand, at most [`MAX_REDIRECTS`], and every hop goes through the
//!   same checks;
//! * the body is streamed to disk and cut off at [`UrlPolicy::max_bytes`]; the whole download
//!   is bounded by [`UrlPolicy::timeout`].
//!
//! Failure classes: a URL the policy refuses, or a malformed one, is `InvalidSpec` (the spec
//! is not runnable here); a server that fails, is unreachable, is too slow or sends too much is
//! `InputUnavailable`; a local write failure is `Internal`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gadus_core::model::SpecConfig;
use gadus_core::protocol::{ExecFailure, FailureKind};
use tokio::io::AsyncWriteExt;
use url::{Host, Url};

use super::{InputProvider, Progress};
use crate::executor::{PreparedInput, failure};

/// Most redirects followed for one download (the common browser and curl default).
pub const MAX_REDIRECTS: usize = 10;

/// What the node is willing to download.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlPolicy {
    /// Allow loopback addresses (127/8, ::1). For development nodes and tests only.
    pub allow_loopback: bool,
    /// Allow private networks (10/8, 172.16/12, 192.168/16, 100.64/10 CGNAT, fc00::/7 ULA).
    pub allow_private: bool,
    /// Exact socket addresses allowed whatever their class (an internal mirror, a test server).
    /// Matched on address and port, so allowing one service opens nothing else on that host.
    pub allow_addrs: Vec<SocketAddr>,
    /// Largest body accepted, in bytes.
    pub max_bytes: u64,
    /// Limit on the whole download, redirects included.
    pub timeout: Duration,
}

impl Default for UrlPolicy {
    /// Public addresses only, 10 GiB, 30 minutes.
    fn default() -> Self {
        UrlPolicy {
            allow_loopback: false,
            allow_private: false,
            allow_addrs: Vec::new(),
            max_bytes: 10 * 1024 * 1024 * 1024,
            timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// What an address is, for the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrClass {
    /// Globally routable as far as we know.
    Public,
    /// 127/8, ::1.
    Loopback,
    /// RFC 1918, CGNAT, IPv6 unique-local.
    Private,
    /// Never fetched unless explicitly allowed: link-local (cloud metadata), unspecified,
    /// multicast, broadcast, reserved ranges. The string says which.
    Forbidden(&'static str),
}

/// Classifies an address. IPv4 addresses carried in IPv6 (mapped `::ffff:a.b.c.d`, the old
/// compatible form, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are judged as the IPv4 address they
/// reach.
pub fn classify(ip: IpAddr) -> AddrClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddrClass {
    let o = ip.octets();
    if ip.is_loopback() {
        AddrClass::Loopback
    } else if ip.is_unspecified() || o[0] == 0 {
        AddrClass::Forbidden("unspecified (0.0.0.0/8)")
    } else if ip.is_link_local() {
        AddrClass::Forbidden("link-local (169.254/16, cloud metadata)")
    } else if ip.is_broadcast() {
        AddrClass::Forbidden("broadcast")
    } else if ip.is_multicast() {
        AddrClass::Forbidden("multicast")
    } else if o[0] >= 240 {
        AddrClass::Forbidden("reserved (240/4)")
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        AddrClass::Forbidden("IETF protocol assignments (192.0.0/24)")
    } else if ip.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
        AddrClass::Private
    } else {
        AddrClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddrClass {
    let s = ip.segments();
    if ip.is_loopback() {
        return AddrClass::Loopback;
    }
    if ip.is_unspecified() {
        return AddrClass::Forbidden("unspecified (::)");
    }
    // IPv4-mapped ::ffff:a.b.c.d and IPv4-compatible ::a.b.c.d (`to_ipv4` covers both; `::1`
    // and `::` were handled above).
    if let Some(v4) = ip.to_ipv4() {
        return classify_v4(v4);
    }
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    // NAT64 well-known prefix: the gateway connects to the embedded IPv4 address.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|&x| x == 0) {
        return classify_v4(embedded(s[6], s[7]));
    }
    // 6to4: 2002:AABB:CCDD::/48 reaches AA.BB.CC.DD.
    if s[0] == 0x2002 {
        return classify_v4(embedded(s[1], s[2]));
    }
    if ip.is_multicast() {
        AddrClass::Forbidden("multicast (ff00::/8)")
    } else if (s[0] & 0xffc0) == 0xfe80 {
        AddrClass::Forbidden("link-local (fe80::/10)")
    } else if (s[0] & 0xffc0) == 0xfec0 {
        AddrClass::Forbidden("site-local (fec0::/10)")
    } else if (s[0] & 0xfe00) == 0xfc00 {
        AddrClass::Private
    } else {
        AddrClass::Public
    }
}

/// Downloads `urlDownload` inputs under a [`UrlPolicy`].
#[derive(Clone, Debug)]
pub struct UrlDownloadProvider {
    policy: UrlPolicy,
}

impl UrlDownloadProvider {
    /// A provider enforcing `policy`.
    pub fn new(policy: UrlPolicy) -> Self {
        UrlDownloadProvider { policy }
    }

    /// The policy in force.
    pub fn policy(&self) -> &UrlPolicy {
        &self.policy
    }

    /// Follows redirects (re-vetting each hop) and streams the final body into `dest`.
    async fn download(
        &self,
        start: Url,
        dest: &Path,
        progress: &dyn Progress,
    ) -> Result<u64, ExecFailure> {
        let mut url = start;
        for _hop in 0..=MAX_REDIRECTS {
            let (domain, addrs) = vet_url(&self.policy, &url, "urlDownload").await?;
            let mut builder = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .connect_timeout(Duration::from_secs(30).min(self.policy.timeout));
            if let Some(domain) = &domain {
                builder = builder.resolve_to_addrs(domain, &addrs);
            }
            let client = builder.build().map_err(|e| {
                failure(
                    FailureKind::Internal,
                    format!("urlDownload: cannot build HTTP client: {e}"),
                )
            })?;
            let shown = redact(&url);
            let mut resp = client.get(url.clone()).send().await.map_err(|e| {
                failure(
                    FailureKind::InputUnavailable,
                    format!("urlDownload: request to {shown} failed: {e}"),
                )
            })?;
            let status = resp.status();
            if status.is_redirection() {
                let location = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| {
                        failure(
                            FailureKind::InputUnavailable,
                            format!("urlDownload: {shown} answered {status} without Location"),
                        )
                    })?;
                let next = url.join(location).map_err(|e| {
                    failure(
                        FailureKind::InputUnavailable,
                        format!("urlDownload: {shown} redirected to a bad URL: {e}"),
                    )
                })?;
                progress.report(&format!("redirected from {shown} to {}", redact(&next)));
                url = next;
                continue;
            }
            if !status.is_success() {
                return Err(failure(
                    FailureKind::InputUnavailable,
                    format!("urlDownload: {shown} answered {status}"),
                ));
            }
            let max = self.policy.max_bytes;
            let total = resp.content_length();
            if let Some(len) = total
                && len > max
            {
                return Err(failure(
                    FailureKind::InputUnavailable,
                    format!("urlDownload: {shown} is {len} bytes, over the node's limit of {max}"),
                ));
            }
            let mut file = tokio::fs::File::create_new(dest).await.map_err(|e| {
                failure(
                    FailureKind::Internal,
                    format!("urlDownload: cannot create {}: {e}", dest.display()),
                )
            })?;
            progress.report(&format!("downloading {shown}{}", of_total(0, total)));
            let mut got: u64 = 0;
            let mut last_report = Instant::now();
            while let Some(chunk) = resp.chunk().await.map_err(|e| {
                failure(
                    FailureKind::InputUnavailable,
                    format!("urlDownload: reading {shown} failed: {e}"),
                )
            })? {
                got += chunk.len() as u64;
                if got > max {
                    return Err(failure(
                        FailureKind::InputUnavailable,
                        format!(
                            "urlDownload: {shown} sent more than the node's limit of {max} bytes"
                        ),
                    ));
                }
                file.write_all(&chunk).await.map_err(|e| {
                    failure(
                        FailureKind::Internal,
                        format!("urlDownload: writing {} failed: {e}", dest.display()),
                    )
                })?;
                if last_report.elapsed() >= Duration::from_secs(1) {
                    last_report = Instant::now();
                    progress.report(&format!("downloading {shown}{}", of_total(got, total)));
                }
            }
            file.flush().await.map_err(|e| {
                failure(
                    FailureKind::Internal,
                    format!("urlDownload: writing {} failed: {e}", dest.display()),
                )
            })?;
            progress.report(&format!("downloaded {shown} ({})", mib(got)));
            return Ok(got);
        }
        Err(failure(
            FailureKind::InputUnavailable,
            format!("urlDownload: more than {MAX_REDIRECTS} redirects"),
        ))
    }
}

#[async_trait::async_trait]
impl InputProvider for UrlDownloadProvider {
    fn source_type(&self) -> &'static str {
        "urldownload"
    }

    async fn prepare(
        &self,
        source: &SpecConfig,
        target: &str,
        work_dir: &Path,
        progress: &dyn Progress,
    ) -> Result<PreparedInput, ExecFailure> {
        let raw = source.param_str("URL").ok_or_else(|| {
            failure(FailureKind::InvalidSpec, "urlDownload: missing URL parameter")
        })?;
        let url = Url::parse(raw.trim()).map_err(|e| {
            failure(FailureKind::InvalidSpec, format!("urlDownload: invalid URL {raw:?}: {e}"))
        })?;
        let dest = work_dir.join(file_name(&url));
        let result = tokio::time::timeout(self.policy.timeout, self.download(url, &dest, progress))
            .await
            .unwrap_or_else(|_| {
                Err(failure(
                    FailureKind::InputUnavailable,
                    format!(
                        "urlDownload: download did not finish within {:?}",
                        self.policy.timeout
                    ),
                ))
            });
        if let Err(e) = result {
            // Leave no partial file behind for the task to mistake for the input.
            let _ = tokio::fs::remove_file(&dest).await;
            return Err(e);
        }
        make_read_only(&dest).await?;
        Ok(PreparedInput::node_owned(target, dest))
    }
}

/// Whether `policy` lets us contact `addr`; `Err` says why not.
fn permits(policy: &UrlPolicy, addr: SocketAddr) -> Result<(), String> {
    if policy.allow_addrs.contains(&addr) {
        return Ok(());
    }
    match classify(addr.ip()) {
        AddrClass::Public => Ok(()),
        AddrClass::Loopback if policy.allow_loopback => Ok(()),
        AddrClass::Private if policy.allow_private => Ok(()),
        AddrClass::Loopback => Err(format!("{} is a loopback address", addr.ip())),
        AddrClass::Private => Err(format!("{} is a private address", addr.ip())),
        AddrClass::Forbidden(what) => Err(format!("{} is {what}", addr.ip())),
    }
}

/// Vets the API base URL a peer advertises (identify's `api=`) before this node fetches
/// content from it: the urlDownload policy applies, as for any URL that arrives from outside.
/// One exception keeps private clusters working: the peer's own address (the IP its libp2p
/// connection comes from) is allowed whatever its class, unless it is of a forbidden class
/// (link-local, metadata, multicast...). The host must be an IP literal (a name could resolve
/// elsewhere later), and the URL a bare `scheme://ip:port` (no user, path, query or fragment,
/// which would let a peer aim requests at another service's endpoint). Returns the URL in
/// canonical form.
pub fn vet_peer_api(
    policy: &UrlPolicy,
    api: &str,
    connected_from: Option<IpAddr>,
) -> Result<String, String> {
    if api.len() > 256 {
        return Err(format!("{} bytes is too long for an API URL", api.len()));
    }
    let url = Url::parse(api).map_err(|e| format!("{api:?} is not a URL: {e}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!("scheme {:?} is not http or https", url.scheme()));
    }
    if !url.username().is_empty()
        || url.password().is_some()
        || !matches!(url.path(), "" | "/")
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(format!("{api:?} must be a bare scheme://address:port"));
    }
    let ip = match url.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
        _ => return Err(format!("{api:?}: the host must be an IP address")),
    };
    let port = url.port_or_known_default().ok_or_else(|| format!("{api:?} has no port"))?;
    let own_address =
        connected_from == Some(ip) && !matches!(classify(ip), AddrClass::Forbidden(_));
    if !own_address {
        permits(policy, SocketAddr::new(ip, port))?;
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Checks a URL's scheme and host against `policy` and returns the vetted addresses to connect
/// to (and the domain to pin them for, when the host is a name). `who` prefixes messages.
/// Refusals are `InvalidSpec`; a name that does not resolve is `InputUnavailable`.
pub(crate) async fn vet_url(
    policy: &UrlPolicy,
    url: &Url,
    who: &str,
) -> Result<(Option<String>, Vec<SocketAddr>), ExecFailure> {
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(failure(
            FailureKind::InvalidSpec,
            format!("{who}: scheme {:?} is not allowed (http and https only)", url.scheme()),
        ));
    }
    let port = url
        .port_or_known_default()
        .ok_or_else(|| failure(FailureKind::InvalidSpec, format!("{who}: {url} has no port")))?;
    let (domain, addrs) = match url.host() {
        Some(Host::Ipv4(ip)) => (None, vec![SocketAddr::new(IpAddr::V4(ip), port)]),
        Some(Host::Ipv6(ip)) => (None, vec![SocketAddr::new(IpAddr::V6(ip), port)]),
        Some(Host::Domain(name)) => {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, port))
                .await
                .map_err(|e| {
                    failure(
                        FailureKind::InputUnavailable,
                        format!("{who}: cannot resolve {name:?}: {e}"),
                    )
                })?
                .collect();
            if addrs.is_empty() {
                return Err(failure(
                    FailureKind::InputUnavailable,
                    format!("{who}: {name:?} has no address"),
                ));
            }
            (Some(name.to_string()), addrs)
        }
        None => return Err(failure(FailureKind::InvalidSpec, format!("{who}: {url} has no host"))),
    };
    // Every answer must pass: a name resolving to one public and one internal address would
    // otherwise let the client pick the internal one.
    for addr in &addrs {
        if let Err(why) = permits(policy, *addr) {
            return Err(failure(
                FailureKind::InvalidSpec,
                format!("{who}: {} refused by policy: {why}", redact(url)),
            ));
        }
    }
    Ok((domain, addrs))
}

/// The file name for a URL: its path's last segment if usable, else `file`. The segment stays
/// percent-encoded, so it can hold neither `/` nor NUL.
fn file_name(url: &Url) -> PathBuf {
    let last = url.path_segments().and_then(|mut s| s.next_back()).unwrap_or("");
    if last.is_empty() || last == "." || last == ".." || last.len() > 255 {
        PathBuf::from("file")
    } else {
        PathBuf::from(last)
    }
}

/// The URL without credentials or query, for messages (queries often carry signed tokens).
pub(crate) fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn of_total(got: u64, total: Option<u64>) -> String {
    match total {
        Some(t) => format!(" ({} of {})", mib(got), mib(t)),
        None => format!(" ({})", mib(got)),
    }
}

async fn make_read_only(path: &Path) -> Result<(), ExecFailure> {
    let meta = tokio::fs::metadata(path).await.map_err(|e| {
        failure(FailureKind::Internal, format!("urlDownload: {}: {e}", path.display()))
    })?;
    let mut perms = meta.permissions();
    perms.set_readonly(true);
    tokio::fs::set_permissions(path, perms).await.map_err(|e| {
        failure(FailureKind::Internal, format!("urlDownload: {}: {e}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 12, defect 4): a peer-advertised API URL became a content source
    /// unchecked, so a peer could aim this node's requests at any internal service.
    #[test]
    fn peer_api_urls_pass_the_url_policy_or_are_the_peers_own_address() {
        let policy = UrlPolicy::default();
        let lan: IpAddr = "10.0.0.7".parse().unwrap();
        // The peer's own (private) address is fine: it is the node we already talk to.
        assert_eq!(
            vet_peer_api(&policy, "http://10.0.0.7:1234/", Some(lan)).unwrap(),
            "http://10.0.0.7:1234"
        );
        assert!(vet_peer_api(&policy, "http://8.8.8.8:1234", None).is_ok());
        for (api, from) in [
            ("http://10.0.0.8:1234", Some(lan)),   // someone else's address
            ("http://127.0.0.1:1234", Some(lan)),  // our own loopback
            ("http://169.254.169.254", Some(lan)), // cloud metadata
            ("http://169.254.169.254", Some("169.254.169.254".parse().unwrap())), // even "own"
            ("http://10.0.0.7:1234/admin?x=", Some(lan)), // a path aimed elsewhere
            ("http://user:pw@10.0.0.7:1234", Some(lan)),
            ("http://internal.example:1234", Some(lan)), // names are not resolved
            ("file:///etc/passwd", Some(lan)),
            ("gopher://10.0.0.7:70", Some(lan)),
            ("not a url", Some(lan)),
        ] {
            assert!(vet_peer_api(&policy, api, from).is_err(), "{api} from {from:?}");
        }
        let loopback_ok = UrlPolicy { allow_loopback: true, ..Default::default() };
        assert!(vet_peer_api(&loopback_ok, "http://127.0.0.1:1234", None).is_ok());
        assert!(
            vet_peer_api(&policy, &format!("http://8.8.8.8:1/{}", "a".repeat(300)), None).is_err()
        );
    }
}
