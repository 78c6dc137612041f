//! The data plane end to end, with real `gadus` processes: `gadus data add/cat/get/export/
//! import` against the node's content store and `/ipfs/` gateway, WASM jobs reading `ipfs` and
//! `inline` inputs, results published with `ipfs` and `local`, and `gadus get`.

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is the failure report.
mod support;

use std::path::Path;

use support::Node;

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[test]
fn data_add_prints_kubo_cids_and_reads_back() {
    let node = Node::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let hello = tmp.path().join("hello.txt");
    std::fs::write(&hello, "hello world").unwrap();
    let h = hello.to_str().unwrap();
    // Kubo's published vectors.
    let v0 = ok(&node.cli(&["data", "add", "-q", h])).trim().to_string();
    assert_eq!(v0, "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD");
    let v1 = ok(&node.cli(&["data", "add", "-q", "--cid-version", "1", h])).trim().to_string();
    assert_eq!(v1, "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e");
    assert_eq!(ok(&node.cli(&["data", "cat", &v0])), "hello world");
    assert_eq!(ok(&node.cli(&["data", "cat", &v1])), "hello world");

    // A tree: directories, a multi-chunk file (> 256 KiB), and paths inside it.
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    std::fs::write(tree.join("a.txt"), "alpha\n").unwrap();
    let big: Vec<u8> = (0..700_000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    std::fs::write(tree.join("sub/big.bin"), &big).unwrap();
    std::fs::write(tree.join("sub/deeper/z.txt"), "zed\n").unwrap();
    let root = ok(&node.cli(&["data", "add", "-q", tree.to_str().unwrap()])).trim().to_string();
    assert_eq!(ok(&node.cli(&["data", "cat", &format!("{root}/sub/deeper/z.txt")])), "zed\n");
    let out = tmp.path().join("out");
    ok(&node.cli(&["data", "get", &root, "-o", out.to_str().unwrap()]));
    assert_eq!(std::fs::read(out.join("sub/big.bin")).unwrap(), big);
    assert_eq!(std::fs::read_to_string(out.join("a.txt")).unwrap(), "alpha\n");

    // The gateway: JSON listing, raw block, CAR; HEAD; unknown CIDs are 404 in the error shape.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = support::http();
        let v: serde_json::Value = c
            .get(node.url(&format!("/ipfs/{root}")))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let names: Vec<&str> =
            v["Links"].as_array().unwrap().iter().map(|l| l["Name"].as_str().unwrap()).collect();
        assert_eq!(names, ["a.txt", "sub"]);
        let r = c.get(node.url(&format!("/ipfs/{v0}?format=raw"))).send().await.unwrap();
        assert_eq!(r.headers()["content-type"], "application/vnd.ipld.raw");
        let car = c
            .get(node.url(&format!("/ipfs/{root}")))
            .header("accept", "application/vnd.ipld.car")
            .send()
            .await
            .unwrap();
        assert!(
            car.headers()["content-type"].to_str().unwrap().starts_with("application/vnd.ipld.car")
        );
        assert!(car.bytes().await.unwrap().len() > big.len());
        let missing = "bafkreiaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let (status, v, _) =
            support::call("GET", &node.url(&format!("/ipfs/{missing}")), None).await;
        assert!(status == 404 || status == 400, "{status} {v}");
        assert!(v["Message"].is_string() && v["RequestID"].is_string(), "{v}");
    });

    // export -> import into another node: same CID, same bytes.
    let car = tmp.path().join("tree.car");
    let exported = node.cli(&["data", "export", &root]);
    std::fs::write(&car, ok_bytes(&exported)).unwrap();
    let other = Node::start(&[]);
    let imported = ok(&other.cli(&["data", "import", car.to_str().unwrap()]));
    assert_eq!(imported.trim(), root);
    assert_eq!(ok(&other.cli(&["data", "cat", &format!("{root}/a.txt")])), "alpha\n");

    // A corrupted CAR is refused and stores nothing.
    let mut bad = std::fs::read(&car).unwrap();
    let n = bad.len();
    bad[n - 10] ^= 0xff;
    let bad_path = tmp.path().join("bad.car");
    std::fs::write(&bad_path, bad).unwrap();
    let third = Node::start(&[]);
    let out = third.cli(&["data", "import", bad_path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(!third.cli(&["data", "cat", &format!("{root}/a.txt")]).status.success());
}

fn ok_bytes(out: &std::process::Output) -> Vec<u8> {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout.clone()
}

#[test]
fn wasm_word_count_reads_ipfs_publishes_ipfs_and_local() {
    let node = Node::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let book = tmp.path().join("book.txt");
    std::fs::write(&book, "It was the best of times,\nit was the worst of times.\n").unwrap();
    let cid = ok(&node.cli(&["data", "add", "-q", book.to_str().unwrap()])).trim().to_string();
    let module = examples().join("wasm/word-count.wasm");

    // ipfs in, ipfs out: the result CID's outputs/count.txt holds the count.
    let out = ok(&node.cli(&[
        "wasm",
        "run",
        module.to_str().unwrap(),
        "-i",
        &format!("ipfs://{cid}:/inputs/book.txt"),
        "-o",
        "outputs:/outputs",
        "-p",
        "ipfs",
        "--id-only",
    ]));
    let job = out.trim().lines().last().unwrap().to_string();
    let v = ok(&node.cli(&["job", "describe", &job, "--output", "json"]));
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["Job"]["State"]["StateType"], "Completed", "{v}");
    let published = &v["Executions"]["Items"][0]["PublishedResult"];
    assert_eq!(published["Type"], "ipfs", "{published}");
    let result_cid = published["Params"]["CID"].as_str().unwrap();
    let count = ok(&node.cli(&["data", "cat", &format!("{result_cid}/outputs/count.txt")]));
    assert_eq!(count, "12\n");

    // gadus get unpacks it into DIR/job-<id>/.
    let dest = tmp.path().join("results");
    ok(&node.cli(&["get", &job, "-o", dest.to_str().unwrap()]));
    let dir = dest.join(format!("job-{job}"));
    assert_eq!(std::fs::read_to_string(dir.join("outputs/count.txt")).unwrap(), "12\n");
    assert_eq!(std::fs::read_to_string(dir.join("stdout")).unwrap(), "12\n");
    assert_eq!(std::fs::read_to_string(dir.join("exitCode")).unwrap().trim(), "0");
    assert!(!dir.join("raw").exists(), "raw/ is removed unless --raw");

    // The same with the local publisher: a urlDownload of a tar.gz served by the node.
    let out = ok(&node.cli(&[
        "wasm",
        "run",
        module.to_str().unwrap(),
        "-i",
        &format!("ipfs://{cid}:/inputs/book.txt"),
        "-o",
        "outputs:/outputs",
        "-p",
        "local",
        "--id-only",
    ]));
    let job = out.trim().lines().last().unwrap().to_string();
    let v: serde_json::Value =
        serde_json::from_str(&ok(&node.cli(&["job", "describe", &job, "--output", "json"])))
            .unwrap();
    let published = &v["Executions"]["Items"][0]["PublishedResult"];
    assert_eq!(published["Type"], "urlDownload", "{published}");
    assert!(published["Params"]["URL"].as_str().unwrap().ends_with(".tar.gz"));
    ok(&node.cli(&["get", &job, "-o", dest.to_str().unwrap()]));
    let dir = dest.join(format!("job-{job}"));
    assert_eq!(std::fs::read_to_string(dir.join("outputs/count.txt")).unwrap(), "12\n");
}

#[test]
fn the_readme_first_command_runs_an_inline_wasm_job() {
    // `job run --local` starts an embedded node: no server needed.
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(support::gadus_bin())
        .args(["job", "run", "--local", "--data-dir", tmp.path().to_str().unwrap()])
        .arg(examples().join("hello-wasm.yaml"))
        .output()
        .unwrap();
    assert_eq!(ok(&out), "hello from gadus\n");
}

#[test]
fn local_inputs_need_the_allow_list() {
    let tmp = tempfile::tempdir().unwrap();
    let allowed = tmp.path().join("allowed");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::write(allowed.join("book.txt"), "one two three\n").unwrap();
    let secret = tmp.path().join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("book.txt"), "secret words here now\n").unwrap();
    let node = Node::start(&["--allow-listed-local-paths", &format!("{}:ro", allowed.display())]);
    let module = examples().join("wasm/word-count.wasm");
    let run = |dir: &Path| {
        node.cli(&[
            "wasm",
            "run",
            module.to_str().unwrap(),
            "-i",
            &format!("file://{}:/inputs", dir.display()),
            "-o",
            "outputs:/outputs",
        ])
    };
    let out = run(&allowed);
    assert!(ok(&out).contains('3'), "{}", String::from_utf8_lossy(&out.stdout));
    let out = run(&secret);
    assert!(!out.status.success(), "a path outside the allow-list must not be mounted");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("allow"), "{text}");
}

/// Issue 13, item 2: uploads into the content store are bounded per request
/// (`DataStore.MaxUploadBytes`, 413), by the store's quota (`DataStore.Quota`, 507) and by the
/// free space the node keeps (`DataStore.MinFreeDisk`, 507), each refusal naming its key and
/// leaving nothing behind (no spool file, no blocks).
#[test]
fn uploads_respect_the_request_cap_the_quota_and_the_free_space_floor() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    let bytes: Vec<u8> =
        (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&big, &bytes).unwrap();
    let small = dir.path().join("small.txt");
    std::fs::write(&small, "small\n").unwrap();
    let (big, small) = (big.to_str().unwrap(), small.to_str().unwrap());
    let text = |o: &std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    let spooled =
        |node: &Node| std::fs::read_dir(node.data_dir.join("tmp")).map(|d| d.count()).unwrap_or(0);

    let node = Node::start(&["-c", "DataStore.MaxUploadBytes=50000"]);
    let o = node.cli(&["data", "add", "-q", big]);
    assert!(!o.status.success() && text(&o).contains("DataStore.MaxUploadBytes"), "{}", text(&o));
    assert_eq!(spooled(&node), 0, "the spool is removed");
    assert!(node.cli(&["data", "add", "-q", small]).status.success());
    drop(node);

    let node = Node::start(&["-c", "DataStore.Quota=100KB"]);
    let o = node.cli(&["data", "add", "-q", big]);
    assert!(!o.status.success() && text(&o).contains("DataStore.Quota"), "{}", text(&o));
    assert_eq!(spooled(&node), 0);
    let o = node.cli(&["data", "add", "-q", small]);
    assert!(o.status.success(), "within the quota: {}", text(&o));
    drop(node);

    let node = Node::start(&["-c", "DataStore.MinFreeDisk=100%"]);
    let o = node.cli(&["data", "add", "-q", small]);
    assert!(!o.status.success() && text(&o).contains("DataStore.MinFreeDisk"), "{}", text(&o));
    assert_eq!(spooled(&node), 0);

    // A bad setting stops the node at start, naming the key.
    let data = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(support::gadus_bin())
        .args(["serve", "--data-dir"])
        .arg(data.path())
        .args(["--api-host", "127.0.0.1", "--api-port", "0", "-c", "DataStore.Quota=lots"])
        .output()
        .unwrap();
    assert!(!o.status.success() && text(&o).contains("DataStore.Quota"), "{}", text(&o));
}
