//! The `s3` input source and publisher against a real S3 server: `s3s-fs` (an S3 API over a
//! folder, with SigV4 auth) started on loopback by each test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use gadus_core::model::{Job, SpecConfig};
use gadus_core::protocol::FailureKind;
use gadus_io::archive::{UnpackLimits, safe_unpack_tar_gz};
use gadus_io::storage::s3::{
    MULTIPART_THRESHOLD, S3Config, S3Credentials, S3InputProvider, S3Publisher, substitute_key,
};
use gadus_io::storage::url::UrlPolicy;
use gadus_io::storage::{InputProvider, NoProgress, Publisher};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

const AK: &str = "gadus-test-access";
const SK: &str = "gadus-test-secret-key-0123456789";
const BUCKET: &str = "results";

/// A running S3 server and the folder it serves.
struct Server {
    addr: SocketAddr,
    _root: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let root = tempfile::tempdir().unwrap();
        // A bucket is a folder under the root.
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let fs = s3s_fs::FileSystem::new(root.path()).map_err(|e| format!("{e:?}")).unwrap();
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(AK, SK));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            while let Ok((sock, _)) = listener.accept().await {
                let conn = http.serve_connection(TokioIo::new(sock), service.clone()).into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        Server { addr, _root: root }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client of our own, to seed and check the bucket independently of the code under test.
    fn client(&self) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id(AK)
            .with_secret_access_key(SK)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .build()
            .unwrap()
    }

    async fn put(&self, key: &str, data: &[u8]) {
        self.client().put(&ObjectPath::from(key), PutPayload::from(data.to_vec())).await.unwrap();
    }

    async fn get(&self, key: &str) -> Vec<u8> {
        self.client().get(&ObjectPath::from(key)).await.unwrap().bytes().await.unwrap().to_vec()
    }

    async fn etag(&self, key: &str) -> String {
        let meta = self.client().head(&ObjectPath::from(key)).await.unwrap();
        meta.e_tag.unwrap().trim_matches('"').to_string()
    }

    async fn keys(&self) -> Vec<String> {
        use futures::TryStreamExt;
        let mut keys: Vec<String> = self
            .client()
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        keys.sort();
        keys
    }
}

/// Node config: explicit test credentials (never the environment), loopback endpoints allowed.
fn config() -> S3Config {
    S3Config {
        credentials: Some(S3Credentials {
            access_key_id: AK.to_string(),
            secret_access_key: SK.to_string(),
            session_token: None,
        }),
        endpoint_policy: UrlPolicy { allow_loopback: true, ..UrlPolicy::default() },
        ..S3Config::default()
    }
}

fn source(server: &Server, key: &str) -> SpecConfig {
    SpecConfig::new("s3")
        .with_param("Bucket", BUCKET)
        .with_param("Key", key)
        .with_param("Endpoint", server.endpoint())
        .with_param("Region", "us-east-1")
}

fn job() -> Job {
    Job { id: "j-s3-test".to_string(), ..Default::default() }
}

/// Deterministic incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

fn files_under(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// A results folder as an executor leaves it.
fn results() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("results");
    write(&dir.join("stdout"), b"out\n");
    write(&dir.join("stderr"), b"");
    write(&dir.join("exitCode"), b"0");
    write(&dir.join("outputs/report.csv"), b"a,b\n1,2\n");
    write(&dir.join("outputs/nested/deep.txt"), b"deep");
    (tmp, dir)
}

#[tokio::test]
async fn single_object_input() {
    let server = Server::start().await;
    server.put("inputs/data.bin", b"object body").await;
    let work = tempfile::tempdir().unwrap();
    let provider = S3InputProvider::new(config());
    assert_eq!(provider.source_type(), "s3");
    let input = provider
        .prepare(&source(&server, "inputs/data.bin"), "/inputs", work.path(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(input.target, "/inputs");
    assert!(!input.writable);
    assert_eq!(input.host_path, work.path().join("data.bin"));
    assert_eq!(std::fs::read(&input.host_path).unwrap(), b"object body");

    // A missing object is the input's fault, not the spec's.
    let work = tempfile::tempdir().unwrap();
    let err = provider
        .prepare(&source(&server, "inputs/absent.bin"), "/inputs", work.path(), &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::InputUnavailable, "{}", err.message);
}

#[tokio::test]
async fn prefix_input_with_filter_keeps_relative_paths() {
    let server = Server::start().await;
    server.put("logs/2024/a.log", b"a").await;
    server.put("logs/2024/sub/b.log", b"b").await;
    server.put("logs/2024/c.txt", b"c").await;
    server.put("logs/2025/d.log", b"d").await;
    server.put("other/e.log", b"e").await;
    let provider = S3InputProvider::new(config());

    let work = tempfile::tempdir().unwrap();
    let spec = source(&server, "logs/2024/").with_param("Filter", r"\.log$");
    let input = provider.prepare(&spec, "/logs", work.path(), &NoProgress).await.unwrap();
    assert_eq!(input.host_path, work.path());
    assert_eq!(
        files_under(work.path()),
        vec![("a.log".into(), b"a".to_vec()), ("sub/b.log".into(), b"b".to_vec())]
    );

    // `*` with a partial name: everything starting with `logs/20`, paths kept below `logs/`.
    let work = tempfile::tempdir().unwrap();
    let input = provider
        .prepare(&source(&server, "logs/20*"), "/logs", work.path(), &NoProgress)
        .await
        .unwrap();
    let names: Vec<String> = files_under(&input.host_path).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["2024/a.log", "2024/c.txt", "2024/sub/b.log", "2025/d.log"]);

    // A folder named without its trailing `/`.
    let work = tempfile::tempdir().unwrap();
    let input = provider
        .prepare(&source(&server, "logs/2025"), "/logs", work.path(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(input.host_path, work.path());
    assert_eq!(files_under(work.path()), vec![("d.log".into(), b"d".to_vec())]);

    // Nothing matches: unavailable.
    let work = tempfile::tempdir().unwrap();
    let spec = source(&server, "logs/").with_param("Filter", "nomatch");
    let err = provider.prepare(&spec, "/logs", work.path(), &NoProgress).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::InputUnavailable);

    // A bad regex is the spec's fault.
    let spec = source(&server, "logs/").with_param("Filter", "(unclosed");
    let err = provider.prepare(&spec, "/logs", work.path(), &NoProgress).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::InvalidSpec);
}

#[tokio::test]
async fn input_limits_are_enforced() {
    let server = Server::start().await;
    server.put("big/one", &[1u8; 4096]).await;
    server.put("big/two", &[2u8; 4096]).await;
    let provider = S3InputProvider::new(S3Config { max_input_bytes: 6000, ..config() });
    let work = tempfile::tempdir().unwrap();
    let err = provider
        .prepare(&source(&server, "big/"), "/in", work.path(), &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::InputUnavailable);
    assert!(err.message.contains("limit"), "{}", err.message);

    let provider = S3InputProvider::new(S3Config { max_input_objects: 1, ..config() });
    let err = provider
        .prepare(&source(&server, "big/"), "/in", work.path(), &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::InputUnavailable);
}

#[tokio::test]
async fn spec_endpoint_is_vetted_and_bad_params_refused() {
    let server = Server::start().await;
    server.put("x", b"x").await;
    // Default policy: a loopback Endpoint from a job spec is refused before any request.
    let provider =
        S3InputProvider::new(S3Config { endpoint_policy: UrlPolicy::default(), ..config() });
    let work = tempfile::tempdir().unwrap();
    let err =
        provider.prepare(&source(&server, "x"), "/in", work.path(), &NoProgress).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::InvalidSpec);
    assert!(err.message.contains("refused by policy"), "{}", err.message);

    // The operator's own endpoint is trusted.
    let provider = S3InputProvider::new(S3Config {
        endpoint_policy: UrlPolicy::default(),
        default_endpoint: Some(server.endpoint()),
        ..config()
    });
    let spec = SpecConfig::new("s3").with_param("bucket", BUCKET).with_param("key", "x");
    let input = provider.prepare(&spec, "/in", work.path(), &NoProgress).await.unwrap();
    assert_eq!(std::fs::read(input.host_path).unwrap(), b"x");

    let err = provider
        .prepare(&SpecConfig::new("s3").with_param("Key", "x"), "/in", work.path(), &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::InvalidSpec);

    // Bucket and Region end up in request URLs and host names: only plain names pass.
    for (param, value) in [
        ("Bucket", "../other"),
        ("Bucket", "a/b"),
        ("Region", "us-east-1.evil.example/"),
        ("Region", "x?y"),
    ] {
        let spec = source(&server, "x").with_param(param, value);
        let err = provider.prepare(&spec, "/in", work.path(), &NoProgress).await.unwrap_err();
        assert_eq!(err.kind, FailureKind::InvalidSpec, "{param}={value}");
        assert!(err.message.contains(&format!("invalid {param}")), "{}", err.message);
    }
}

#[tokio::test]
async fn publish_gzip_then_download_and_unpack() {
    let server = Server::start().await;
    let (_tmp, dir) = results();
    let publisher = S3Publisher::new(config());
    assert_eq!(publisher.publisher_type(), "s3");
    let spec = SpecConfig::new("s3")
        .with_param("Bucket", BUCKET)
        .with_param("Key", "jobs/{jobID}/{executionID}.tar.gz")
        .with_param("Endpoint", server.endpoint());
    let published = publisher.publish(&spec, &job(), "e-1", "n-1", &dir).await.unwrap();
    assert_eq!(published.spec_type, "s3");
    assert_eq!(published.param_str("Bucket"), Some(BUCKET));
    assert_eq!(published.param_str("Key"), Some("jobs/j-s3-test/e-1.tar.gz"));
    assert_eq!(published.param_str("Region"), Some("us-east-1"));
    assert_eq!(published.param_str("Endpoint"), Some(server.endpoint().as_str()));
    assert_eq!(server.keys().await, ["jobs/j-s3-test/e-1.tar.gz"]);

    // The published spec is itself a valid s3 input: fetch it back through the provider.
    let work = tempfile::tempdir().unwrap();
    let input = S3InputProvider::new(config())
        .prepare(&published, "/r", work.path(), &NoProgress)
        .await
        .unwrap();
    let unpacked = work.path().join("unpacked");
    let file = std::fs::File::open(&input.host_path).unwrap();
    safe_unpack_tar_gz(file, &unpacked, &UnpackLimits::default()).unwrap();
    assert_eq!(files_under(&unpacked), files_under(&dir));
}

#[tokio::test]
async fn publish_plain_uploads_each_file_under_the_prefix() {
    let server = Server::start().await;
    let (_tmp, dir) = results();
    #[cfg(unix)]
    std::os::unix::fs::symlink("/etc/passwd", dir.join("outputs/leak")).unwrap();
    let spec = SpecConfig::new("s3")
        .with_param("Bucket", BUCKET)
        .with_param("Key", "plain/{executionID}")
        .with_param("Encoding", "plain")
        .with_param("Endpoint", server.endpoint());
    let published =
        S3Publisher::new(config()).publish(&spec, &job(), "e-2", "n-1", &dir).await.unwrap();
    assert_eq!(published.param_str("Key"), Some("plain/e-2/"));
    assert_eq!(
        server.keys().await,
        [
            "plain/e-2/exitCode",
            "plain/e-2/outputs/nested/deep.txt",
            "plain/e-2/outputs/report.csv",
            "plain/e-2/stderr",
            "plain/e-2/stdout",
        ],
        "symlinks are not followed"
    );
    assert_eq!(server.get("plain/e-2/outputs/report.csv").await, b"a,b\n1,2\n");
    // Small files go up in one PUT (a plain MD5 ETag, no part count).
    assert!(!server.etag("plain/e-2/outputs/report.csv").await.contains('-'));

    // And back through the input provider as a prefix.
    let work = tempfile::tempdir().unwrap();
    let input = S3InputProvider::new(config())
        .prepare(&published, "/r", work.path(), &NoProgress)
        .await
        .unwrap();
    let mut expected = files_under(&dir);
    expected.retain(|(n, _)| n != "outputs/leak");
    assert_eq!(files_under(&input.host_path), expected);
}

#[tokio::test]
async fn placeholders_are_substituted() {
    let server = Server::start().await;
    let (_tmp, dir) = results();
    let spec = SpecConfig::new("s3")
        .with_param("bucket", BUCKET)
        .with_param("key", "{nodeID}/{jobID}/{executionID}/{date}-{time}")
        .with_param("endpoint", server.endpoint());
    let published =
        S3Publisher::new(config()).publish(&spec, &job(), "e-3", "node-7", &dir).await.unwrap();
    let key = published.param_str("Key").unwrap().to_string();
    let re = regex::Regex::new(r"^node-7/j-s3-test/e-3/(\d{8})-(\d{6})\.tar\.gz$").unwrap();
    let caps = re.captures(&key).unwrap_or_else(|| panic!("unexpected key {key}"));
    let today = time::OffsetDateTime::now_utc();
    assert!(caps[1].starts_with(&format!("{:04}", today.year())));
    assert_eq!(server.keys().await, [key]);

    let fixed = time::macros::datetime!(2026-03-04 05:06:07 UTC);
    assert_eq!(
        substitute_key("{jobID}/{executionID}/{nodeID}/{date}/{time}", "j", "e", "n", fixed),
        "j/e/n/20260304/050607"
    );
}

#[tokio::test]
async fn multipart_upload_of_a_large_file() {
    let server = Server::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("results");
    let big = noise(12 * 1024 * 1024 + 12345, 42);
    assert!(big.len() as u64 > MULTIPART_THRESHOLD);
    write(&dir.join("outputs/big.bin"), &big);

    // plain: the file itself goes up in parts.
    let spec = SpecConfig::new("s3")
        .with_param("Bucket", BUCKET)
        .with_param("Key", "mp/")
        .with_param("Encoding", "plain")
        .with_param("Endpoint", server.endpoint());
    S3Publisher::new(config()).publish(&spec, &job(), "e-4", "n", &dir).await.unwrap();
    assert_eq!(server.get("mp/outputs/big.bin").await, big);
    // A multipart object's ETag is `<md5 of part md5s>-<part count>`: 12 MiB in 8 MiB parts.
    assert_eq!(server.etag("mp/outputs/big.bin").await.rsplit('-').next(), Some("2"));

    // gzip: the (incompressible) archive is above the threshold too.
    let spec = SpecConfig::new("s3")
        .with_param("Bucket", BUCKET)
        .with_param("Key", "mp.tar.gz")
        .with_param("Endpoint", server.endpoint());
    let published =
        S3Publisher::new(config()).publish(&spec, &job(), "e-5", "n", &dir).await.unwrap();
    let archive = server.get("mp.tar.gz").await;
    assert!(archive.len() as u64 > MULTIPART_THRESHOLD);
    assert!(server.etag("mp.tar.gz").await.ends_with("-2"));
    let out = tempfile::tempdir().unwrap();
    safe_unpack_tar_gz(&archive[..], out.path(), &UnpackLimits::default()).unwrap();
    assert_eq!(std::fs::read(out.path().join("outputs/big.bin")).unwrap(), big);

    // And the large object downloads back through the input provider.
    let work = tempfile::tempdir().unwrap();
    let input = S3InputProvider::new(config())
        .prepare(&published, "/r", work.path(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(std::fs::read(input.host_path).unwrap(), archive);
}

#[tokio::test]
async fn publisher_refuses_bad_params() {
    let server = Server::start().await;
    let (_tmp, dir) = results();
    let publisher = S3Publisher::new(config());
    let no_key = SpecConfig::new("s3").with_param("Bucket", BUCKET);
    let err = publisher.publish(&no_key, &job(), "e", "n", &dir).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::InvalidSpec);
    let bad_encoding = source(&server, "k").with_param("Encoding", "zstd");
    let err = publisher.publish(&bad_encoding, &job(), "e", "n", &dir).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::InvalidSpec);
    // Wrong credentials: the service refuses, publishing failed (not the spec's fault).
    let mut wrong = config();
    wrong.credentials = Some(S3Credentials {
        access_key_id: AK.to_string(),
        secret_access_key: "not-the-secret".to_string(),
        session_token: None,
    });
    let err = S3Publisher::new(wrong)
        .publish(&source(&server, "k"), &job(), "e", "n", &dir)
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::PublishFailed, "{}", err.message);
}
