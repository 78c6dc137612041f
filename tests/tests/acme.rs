//! `gadus serve --autocert HOST` against a real ACME CA: Debian's `pebble` (Let's Encrypt's
//! test server), with `pebble-challtestsrv` as its DNS so HOST resolves to loopback. Pebble
//! validates for real: it connects to HOST on the node's API port with ALPN `acme-tls/1` and
//! checks the challenge certificate (TLS-ALPN-01), then issues from a root it makes at start.
//! `.ci/acme-test-deps.sh` installs pebble (run by `./run-tests`); without it the test skips,
//! and fails under `CI`/`GADUS_REQUIRE_TOOLS`.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Node, gadus_bin};

/// The tools, or `None` when they are missing and the test may skip.
fn pebble_tools() -> Option<()> {
    let have = |t: &str| {
        Command::new(t).arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
    };
    if have("pebble") && have("pebble-challtestsrv") {
        return Some(());
    }
    let required =
        std::env::var_os("CI").is_some() || std::env::var_os("GADUS_REQUIRE_TOOLS").is_some();
    assert!(!required, "pebble is not installed (.ci/acme-test-deps.sh installs it)");
    eprintln!("skipping: pebble is not installed (.ci/acme-test-deps.sh)");
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Pebble and its DNS, validating on `tls_port`. Returns the processes, the directory URL and
/// the file holding pebble's own HTTPS certificate (the ACME client must trust it).
struct Ca {
    _dns: Killed,
    _pebble: Killed,
    directory: String,
    management: u16,
    https_cert: std::path::PathBuf,
}

async fn start_ca(dir: &Path, tls_port: u16) -> Ca {
    // Pebble's own HTTPS certificate, for the address its clients dial.
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.join("pebble.crt"), dir.join("pebble.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let (acme, management, dns, dns_mgmt) = (free_port(), free_port(), free_port(), free_port());
    let config = serde_json::json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{acme}"),
        "managementListenAddress": format!("127.0.0.1:{management}"),
        "certificate": cert, "privateKey": key,
        "httpPort": free_port(), "tlsPort": tls_port,
        "ocspResponderURL": "", "externalAccountBindingRequired": false}});
    let config_path = dir.join("pebble.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let quiet = |c: &mut Command| {
        c.stdout(Stdio::null()).stderr(Stdio::null());
    };
    let mut c = Command::new("pebble-challtestsrv");
    c.args(["-dns01", &format!("127.0.0.1:{dns}"), "-management"])
        .arg(format!("127.0.0.1:{dns_mgmt}"))
        .args(["-http01", "", "-https01", "", "-tlsalpn01", "", "-defaultIPv6", ""])
        .args(["-defaultIPv4", "127.0.0.1"]);
    quiet(&mut c);
    let dns_child = Killed(c.spawn().unwrap());
    let mut c = Command::new("pebble");
    c.arg("-config").arg(&config_path).args(["-dnsserver", &format!("127.0.0.1:{dns}")]);
    // No random pauses before validation, no deliberately rejected nonces: the test is about
    // the protocol, and stays quick.
    c.env("PEBBLE_VA_NOSLEEP", "1").env("PEBBLE_WFE_NONCEREJECT", "0");
    quiet(&mut c);
    let pebble = Killed(c.spawn().unwrap());
    let directory = format!("https://127.0.0.1:{acme}/dir");
    let client = trusting(&std::fs::read(&cert).unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(&directory).send().await.map(|r| r.status() != 200).unwrap_or(true) {
        assert!(Instant::now() < deadline, "pebble did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ca { _dns: dns_child, _pebble: pebble, directory, management, https_cert: cert }
}

fn trusting(pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn wait_for_line(node: &Node, needle: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !node.stderr.lock().unwrap().iter().any(|l| l.contains(needle)) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} within {within:?}: {:#?}",
            node.stderr.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Item 6: `--autocert` obtains a certificate from a real ACME CA, proving control of the host
/// on the API's own port; clients that trust the CA's root connect by name (the CLI with
/// `--cacert`); others are refused; the account and certificate are cached privately, and a
/// restart serves the cached certificate while the CA is down.
#[tokio::test]
async fn autocert_obtains_a_certificate_from_pebble_and_serves_it_from_cache() {
    if pebble_tools().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let ca = start_ca(tmp.path(), port).await;
    let data = tmp.path().join("node");
    let args = [
        "--autocert",
        "localhost",
        "-c",
        &format!("API.TLS.AutoCertDirectory={}", ca.directory),
        "-c",
        &format!("API.TLS.AutoCertCAFile={}", ca.https_cert.display()),
    ];
    // The node logs at info so the ACME steps are in its stderr when this fails.
    let mut node = Node::start_in_env(&data, port, &args, &[("GADUS_LOG", "info")]);
    wait_for_line(
        &node,
        "TLS certificate for localhost obtained over ACME",
        Duration::from_secs(90),
    );

    // Pebble's root for this run, from its management interface.
    let root = trusting(&std::fs::read(&ca.https_cert).unwrap())
        .get(format!("https://127.0.0.1:{}/roots/0", ca.management))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let root_file = tmp.path().join("pebble-root.pem");
    std::fs::write(&root_file, &root).unwrap();
    let url = format!("https://localhost:{port}/api/v1/agent/version");
    let resp = trusting(&root).get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "a client trusting the CA's root reaches the API by name");

    let cli = |args: &[&str]| {
        Command::new(gadus_bin())
            .arg("--data-dir")
            .arg(tmp.path().join("client"))
            .args(["--api-host", "localhost", "--api-port", &port.to_string()])
            .args(args)
            .output()
            .unwrap()
    };
    let o = cli(&["--cacert", &root_file.display().to_string(), "agent", "version"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = cli(&["--tls", "agent", "version"]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success() && err.contains("does not trust"), "{err}");

    // Cached privately: the account key and the certificate's key never leave mode 0600.
    use std::os::unix::fs::PermissionsExt;
    let cache = data.join("autocert-cache");
    for f in ["account.json", "localhost.pem"] {
        let mode = std::fs::metadata(cache.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let cached = std::fs::read(cache.join("localhost.pem")).unwrap();

    // The CA goes away; a restart serves the cached certificate at once.
    node.kill9();
    drop(ca);
    let node = Node::start_in_env(&data, port, &args, &[("GADUS_LOG", "info")]);
    assert!(
        node.stderr.lock().unwrap().iter().any(|l| l.contains("(cached certificate;")),
        "{:#?}",
        node.stderr.lock().unwrap()
    );
    let resp = trusting(&root).get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(std::fs::read(cache.join("localhost.pem")).unwrap(), cached, "nothing re-ordered");
}

/// Bad settings are refused at start with the key named, before anything is served.
#[test]
fn autocert_settings_are_checked_at_start() {
    let cases: [(&[&str], &str); 4] = [
        (&["--autocert", "127.0.0.1"], "IP address"),
        (&["--autocert", "*.example.org"], "not a DNS host name"),
        (&["--autocert", "a.example.org", "--self-signed"], "goes without"),
        (
            &["--autocert", "a.example.org", "-c", "API.TLS.AutoCertDirectory=http://ca.test/dir"],
            "over https",
        ),
    ];
    for (args, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        let o = Command::new(gadus_bin())
            .args(["serve", "--data-dir"])
            .arg(dir.path())
            .args(["--api-host", "127.0.0.1", "--api-port", "0", "-c", "Network.Host=127.0.0.1"])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} started");
        assert!(err.contains("API.TLS") && err.contains(says), "{args:?}: {err}");
    }
}
