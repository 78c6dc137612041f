//! The WASM executor against real modules (built from WAT here) and real files.
//!
//! Each test writes its modules and inputs into a temporary directory, builds the
//! `ExecutionContext` the node would, and checks the result files, the returned output and the
//! failure classification.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gadus_core::model::{Job, Resources, ResultPath, SpecConfig, Task};
use gadus_core::protocol::{ExecFailure, FailureKind};
use gadus_io::executor::wasm::{NOOP_MODULE, WasmConfig, WasmExecutor};
use gadus_io::executor::{
    ExecutionContext, Executor, LogSink, OutputLimits, PreparedInput, RunOutput, Stream, system_env,
};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// WAT building blocks
// ---------------------------------------------------------------------------------------------

/// WASI imports and helpers shared by the test modules. Memory layout:
/// 0..16 iovec, 16..32 size results, 64..72 prestat, 72..76 opened fd, 200..241 number
/// formatting, 512..1024 preopen-name buffer, 1024..4096 the module's strings, 4096.. buffers.
const PRELUDE: &str = r#"
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $fd_prestat_dir_name (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_unlink_file" (func $path_unlink_file (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_symlink" (func $path_symlink (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_create_directory" (func $path_create_directory (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_set_times" (func $fd_filestat_set_times (param i32 i64 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 4)

  ;; Writes [ptr, ptr+len) to fd; returns the errno.
  (func $write (param $fd i32) (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))

  (func $print (param $ptr i32) (param $len i32)
    (drop (call $write (i32.const 1) (local.get $ptr) (local.get $len))))

  (func $newline
    (i32.store8 (i32.const 250) (i32.const 10))
    (call $print (i32.const 250) (i32.const 1)))

  (func $strlen (param $p i32) (result i32)
    (local $n i32)
    (block $end
      (loop $next
        (br_if $end (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $n))

  (func $memeq (param $a i32) (param $b i32) (param $len i32) (result i32)
    (local $i i32)
    (block $differ
      (loop $next
        (if (i32.ge_u (local.get $i) (local.get $len)) (then (return (i32.const 1))))
        (br_if $differ (i32.ne (i32.load8_u (i32.add (local.get $a) (local.get $i)))
                               (i32.load8_u (i32.add (local.get $b) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  ;; Formats n in decimal followed by '\n', ending at address 241; returns the start address
  ;; (the text is 241 - start bytes long).
  (func $fmt_u32 (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (i32.const 240))
    (i32.store8 (i32.const 240) (i32.const 10))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digit (local.get $n)))
    (local.get $p))

  (func $print_u32 (param $n i32)
    (local $p i32)
    (local.set $p (call $fmt_u32 (local.get $n)))
    (call $print (local.get $p) (i32.sub (i32.const 241) (local.get $p))))

  ;; Prints the errno of an operation result: -errno for failures, 0 for success (r >= 0).
  (func $report (param $r i32)
    (if (i32.lt_s (local.get $r) (i32.const 0))
      (then (call $print_u32 (i32.sub (i32.const 0) (local.get $r))))
      (else (call $print_u32 (i32.const 0)))))

  ;; The fd of the preopen named [name, name+len), or -1.
  (func $find_preopen (param $name i32) (param $len i32) (result i32)
    (local $fd i32)
    (local.set $fd (i32.const 3))
    (block $done
      (loop $next
        (br_if $done (i32.ne (call $fd_prestat_get (local.get $fd) (i32.const 64)) (i32.const 0)))
        (if (i32.eq (i32.load (i32.const 68)) (local.get $len))
          (then
            (drop (call $fd_prestat_dir_name (local.get $fd) (i32.const 512) (local.get $len)))
            (if (call $memeq (i32.const 512) (local.get $name) (local.get $len))
              (then (return (local.get $fd))))))
        (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
        (br $next)))
    (i32.const -1))

  ;; Prints the name of every preopen, one per line.
  (func $list_preopens
    (local $fd i32)
    (local.set $fd (i32.const 3))
    (block $done
      (loop $next
        (br_if $done (i32.ne (call $fd_prestat_get (local.get $fd) (i32.const 64)) (i32.const 0)))
        (drop (call $fd_prestat_dir_name (local.get $fd) (i32.const 512) (i32.load (i32.const 68))))
        (call $print (i32.const 512) (i32.load (i32.const 68)))
        (call $newline)
        (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
        (br $next))))

  ;; path_open relative to dirfd (following symlinks); the new fd, or -errno.
  (func $open (param $dir i32) (param $path i32) (param $len i32) (param $oflags i32) (param $rights i64) (result i32)
    (local $errno i32)
    (local.set $errno
      (call $path_open (local.get $dir) (i32.const 1) (local.get $path) (local.get $len)
        (local.get $oflags) (local.get $rights) (i64.const 0) (i32.const 0) (i32.const 72)))
    (if (result i32) (local.get $errno)
      (then (i32.sub (i32.const 0) (local.get $errno)))
      (else (i32.load (i32.const 72)))))

  ;; Opens a preopen-relative path and reports the outcome (closing the fd on success).
  (func $try_open (param $dir i32) (param $path i32) (param $len i32) (param $oflags i32) (param $rights i64)
    (local $fd i32)
    (local.set $fd (call $open (local.get $dir) (local.get $path) (local.get $len) (local.get $oflags) (local.get $rights)))
    (call $report (local.get $fd))
    (if (i32.ge_s (local.get $fd) (i32.const 0)) (then (drop (call $fd_close (local.get $fd))))))

  ;; Sleeps `ns` nanoseconds through poll_oneoff on the monotonic clock.
  (func $sleep (param $ns i64)
    (i64.store (i32.const 4096) (i64.const 0))          ;; userdata
    (i32.store8 (i32.const 4104) (i32.const 0))         ;; tag: clock
    (i32.store (i32.const 4112) (i32.const 1))          ;; clock id: monotonic
    (i64.store (i32.const 4120) (local.get $ns))        ;; timeout
    (i64.store (i32.const 4128) (i64.const 0))          ;; precision
    (i32.store16 (i32.const 4136) (i32.const 0))        ;; flags: relative
    (drop (call $poll_oneoff (i32.const 4096) (i32.const 4160) (i32.const 1) (i32.const 4200))))
"#;

/// Rights and flags used by the modules.
const FD_READ: &str = "(i64.const 2)";
const FD_WRITE: &str = "(i64.const 64)";
const O_CREAT_TRUNC: &str = "(i32.const 9)";

/// Compiles a module from the prelude, `data` declarations and an exported `_start` body.
fn module(data: &[(u32, &str)], start_body: &str) -> Vec<u8> {
    module_with(data, &format!("(func (export \"_start\") {start_body})"))
}

/// Like [`module`] with arbitrary extra module fields instead of a `_start` body.
fn module_with(data: &[(u32, &str)], fields: &str) -> Vec<u8> {
    let mut text = String::from("(module\n");
    text.push_str(PRELUDE);
    for (addr, s) in data {
        text.push_str(&format!("  (data (i32.const {addr}) \"{s}\")\n"));
    }
    text.push_str(fields);
    text.push_str("\n)");
    wat::parse_str(&text).unwrap_or_else(|e| panic!("bad test module: {e}\n{text}"))
}

/// A call printing the string at `addr` of `len` bytes.
fn print(addr: u32, len: usize) -> String {
    format!("(call $print (i32.const {addr}) (i32.const {len}))")
}

// ---------------------------------------------------------------------------------------------
// Execution fixtures
// ---------------------------------------------------------------------------------------------

/// Collects everything the executor streams.
#[derive(Default)]
struct Collect(Mutex<Vec<(Stream, Vec<u8>)>>);

impl LogSink for Collect {
    fn write(&self, stream: Stream, bytes: &[u8]) {
        self.0.lock().unwrap().push((stream, bytes.to_vec()));
    }
}

impl Collect {
    fn text(&self, stream: Stream) -> String {
        let chunks = self.0.lock().unwrap();
        let bytes: Vec<u8> =
            chunks.iter().filter(|(s, _)| *s == stream).flat_map(|(_, b)| b.clone()).collect();
        String::from_utf8(bytes).unwrap()
    }
}

/// A task's worth of files in a temporary directory.
struct Fixture {
    dir: TempDir,
    inputs: Vec<PreparedInput>,
    params: serde_json::Map<String, serde_json::Value>,
    env: BTreeMap<String, String>,
    result_paths: Vec<ResultPath>,
    resources: Resources,
    deadline: Option<Duration>,
    output_limits: OutputLimits,
    execution_id: String,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            inputs: Vec::new(),
            params: serde_json::Map::new(),
            env: BTreeMap::new(),
            result_paths: Vec::new(),
            resources: Resources { cpu: 1.0, memory: 64 * 1024 * 1024, ..Default::default() },
            deadline: Some(Duration::from_secs(60)),
            output_limits: OutputLimits::default(),
            execution_id: "e-00000000-0000-0000-0000-000000000001".to_string(),
        }
    }

    /// A fixture whose entry module is `wasm`, mounted as a file input at `/wasm/main.wasm`.
    fn with_entry(wasm: &[u8]) -> Self {
        let mut f = Fixture::new();
        f.add_file_input("main.wasm", wasm, "/wasm/main.wasm");
        f.param("EntryModule", "/wasm/main.wasm");
        f
    }

    fn host(&self, rel: &str) -> PathBuf {
        self.dir.path().join("host").join(rel)
    }

    fn results(&self) -> PathBuf {
        self.dir.path().join("results")
    }

    fn write_host(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let path = self.host(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn add_file_input(&mut self, rel: &str, bytes: &[u8], target: &str) -> PathBuf {
        let host_path = self.write_host(rel, bytes);
        self.inputs.push(PreparedInput::node_owned(target, host_path.clone()));
        host_path
    }

    fn add_dir_input(&mut self, rel: &str, files: &[(&str, &[u8])], target: &str) -> PathBuf {
        let host_path = self.host(rel);
        std::fs::create_dir_all(&host_path).unwrap();
        for (name, bytes) in files {
            self.write_host(&format!("{rel}/{name}"), bytes);
        }
        self.inputs.push(PreparedInput::node_owned(target, host_path.clone()));
        host_path
    }

    fn param(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.params.insert(key.to_string(), value.into());
    }

    fn result_path(&mut self, name: &str, path: &str) {
        self.result_paths.push(ResultPath { name: name.to_string(), path: path.to_string() });
    }

    fn ctx(&self) -> ExecutionContext {
        let mut engine = SpecConfig::new("wasm");
        engine.params = self.params.clone();
        let task = Task {
            name: "main".to_string(),
            engine: Some(engine),
            env: self.env.clone(),
            result_paths: self.result_paths.clone(),
            ..Default::default()
        };
        let job = Job { id: "j-wasm-test".to_string(), tasks: vec![task], ..Default::default() };
        let results_dir = self.results();
        std::fs::create_dir_all(&results_dir).unwrap();
        ExecutionContext {
            execution_id: self.execution_id.clone(),
            system_env: system_env(&job, &self.execution_id, (0, 1)),
            job: Arc::new(job),
            resources: self.resources.clone(),
            inputs: self.inputs.clone(),
            results_dir,
            deadline: self.deadline,
            output_limits: self.output_limits,
            allow_network: false,
        }
    }

    fn result_file(&self, rel: &str) -> String {
        std::fs::read_to_string(self.results().join(rel))
            .unwrap_or_else(|e| panic!("result file {rel}: {e}"))
    }
}

type RunResult = Result<RunOutput, (ExecFailure, Option<RunOutput>)>;

/// Prepares and runs with a fresh default executor; bounded so a hung run fails the test.
async fn run(f: &Fixture) -> (RunResult, Arc<Collect>) {
    run_with(&WasmExecutor::default(), f).await
}

async fn run_with(exec: &WasmExecutor, f: &Fixture) -> (RunResult, Arc<Collect>) {
    let ctx = f.ctx();
    let logs = Arc::new(Collect::default());
    let result = tokio::time::timeout(Duration::from_secs(120), async {
        exec.prepare(&ctx).await.map_err(|e| (e, None))?;
        exec.run(&ctx, logs.clone()).await
    })
    .await
    .expect("the run ended within the bounded wait");
    exec.cleanup(&ctx.execution_id).await;
    (result, logs)
}

fn expect_ok(result: RunResult) -> RunOutput {
    match result {
        Ok(out) => out,
        Err((f, out)) => panic!("run failed: {f:?}; output: {out:?}"),
    }
}

fn expect_err(result: RunResult) -> (ExecFailure, Option<RunOutput>) {
    match result {
        Ok(out) => panic!("run unexpectedly succeeded: {out:?}"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn hello_world_reaches_result_files_output_and_log_sink() {
    let wasm = module(
        &[(1024, "hello, world\\n"), (1100, "to stderr\\n")],
        &format!(
            "{} (drop (call $write (i32.const 2) (i32.const 1100) (i32.const 10)))",
            print(1024, 13)
        ),
    );
    let f = Fixture::with_entry(&wasm);
    let (result, logs) = run(&f).await;
    let out = expect_ok(result);
    assert_eq!(out.stdout, "hello, world\n");
    assert_eq!(out.stderr, "to stderr\n");
    assert_eq!(out.exit_code, 0);
    assert!(!out.stdout_truncated && !out.stderr_truncated);
    assert_eq!(f.result_file("stdout"), "hello, world\n");
    assert_eq!(f.result_file("stderr"), "to stderr\n");
    assert_eq!(f.result_file("exitCode"), "0");
    assert_eq!(logs.text(Stream::Stdout), "hello, world\n");
    assert_eq!(logs.text(Stream::Stderr), "to stderr\n");
}

/// Prints argv, a `--` line, then the environment, one entry per line.
fn echo_module() -> Vec<u8> {
    module(
        &[(1024, "--\\n")],
        r#"
        (local $i i32) (local $p i32)
        (drop (call $args_sizes_get (i32.const 16) (i32.const 20)))
        (drop (call $args_get (i32.const 4096) (i32.const 8192)))
        (block $done (loop $next
          (br_if $done (i32.ge_u (local.get $i) (i32.load (i32.const 16))))
          (local.set $p (i32.load (i32.add (i32.const 4096) (i32.mul (local.get $i) (i32.const 4)))))
          (call $print (local.get $p) (call $strlen (local.get $p)))
          (call $newline)
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $next)))
        (call $print (i32.const 1024) (i32.const 3))
        (local.set $i (i32.const 0))
        (drop (call $environ_sizes_get (i32.const 16) (i32.const 20)))
        (drop (call $environ_get (i32.const 4096) (i32.const 8192)))
        (block $done (loop $next
          (br_if $done (i32.ge_u (local.get $i) (i32.load (i32.const 16))))
          (local.set $p (i32.load (i32.add (i32.const 4096) (i32.mul (local.get $i) (i32.const 4)))))
          (call $print (local.get $p) (call $strlen (local.get $p)))
          (call $newline)
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $next)))
        "#,
    )
}

#[tokio::test]
async fn args_and_environment_are_passed_like_bacalhau() {
    let mut f = Fixture::with_entry(&echo_module());
    f.param("Parameters", serde_json::json!(["alpha", "beta gamma"]));
    f.env.insert("GREETING".to_string(), "hi there".to_string());
    // System variables override the task's own.
    f.env.insert("BACALHAU_JOB_ID".to_string(), "spoofed".to_string());
    let (result, _) = run(&f).await;
    let out = expect_ok(result);
    let (args, env) = out.stdout.split_once("--\n").unwrap();
    assert_eq!(args, "\nalpha\nbeta gamma\n", "argv is [\"\"] + Parameters");
    let env: Vec<&str> = env.lines().collect();
    assert!(env.contains(&"GREETING=hi there"), "{env:?}");
    assert!(env.contains(&"BACALHAU_JOB_ID=j-wasm-test"), "{env:?}");
    assert!(env.contains(&"GADUS_JOB_ID=j-wasm-test"), "{env:?}");
    assert!(
        env.contains(&"BACALHAU_EXECUTION_ID=e-00000000-0000-0000-0000-000000000001"),
        "{env:?}"
    );
    assert!(!env.iter().any(|l| l.starts_with("BACALHAU_JOB_ID=spoofed")), "{env:?}");
    // Nothing of the node's own environment leaks in.
    assert!(!env.iter().any(|l| l.starts_with("PATH=") || l.starts_with("HOME=")), "{env:?}");
}

/// Counts whitespace-separated words of `/inputs/book.txt` into `/outputs/count.txt` (and
/// stdout), reading in 4 KiB chunks.
fn word_count_module() -> Vec<u8> {
    module(
        &[(1024, "/inputs"), (1040, "book.txt"), (1056, "/outputs"), (1072, "count.txt")],
        &format!(
            r#"
        (local $in i32) (local $fd i32) (local $n i32) (local $i i32) (local $c i32)
        (local $inword i32) (local $count i32) (local $out i32) (local $p i32)
        (local.set $in (call $find_preopen (i32.const 1024) (i32.const 7)))
        (if (i32.lt_s (local.get $in) (i32.const 0)) (then (call $proc_exit (i32.const 10))))
        (local.set $fd (call $open (local.get $in) (i32.const 1040) (i32.const 8) (i32.const 0) {FD_READ}))
        (if (i32.lt_s (local.get $fd) (i32.const 0)) (then (call $proc_exit (i32.const 11))))
        (block $eof (loop $read
          (i32.store (i32.const 0) (i32.const 8192))
          (i32.store (i32.const 4) (i32.const 4096))
          (if (call $fd_read (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))
            (then (call $proc_exit (i32.const 12))))
          (local.set $n (i32.load (i32.const 8)))
          (br_if $eof (i32.eqz (local.get $n)))
          (local.set $i (i32.const 0))
          (block $chunk (loop $byte
            (br_if $chunk (i32.ge_u (local.get $i) (local.get $n)))
            (local.set $c (i32.load8_u (i32.add (i32.const 8192) (local.get $i))))
            (if (i32.or (i32.or (i32.eq (local.get $c) (i32.const 32)) (i32.eq (local.get $c) (i32.const 10)))
                        (i32.or (i32.eq (local.get $c) (i32.const 9)) (i32.eq (local.get $c) (i32.const 13))))
              (then (local.set $inword (i32.const 0)))
              (else
                (if (i32.eqz (local.get $inword))
                  (then (local.set $count (i32.add (local.get $count) (i32.const 1)))))
                (local.set $inword (i32.const 1))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $byte)))
          (br $read)))
        (local.set $out (call $find_preopen (i32.const 1056) (i32.const 8)))
        (if (i32.lt_s (local.get $out) (i32.const 0)) (then (call $proc_exit (i32.const 13))))
        (local.set $fd (call $open (local.get $out) (i32.const 1072) (i32.const 9) {O_CREAT_TRUNC} {FD_WRITE}))
        (if (i32.lt_s (local.get $fd) (i32.const 0)) (then (call $proc_exit (i32.const 14))))
        (local.set $p (call $fmt_u32 (local.get $count)))
        (if (call $write (local.get $fd) (local.get $p) (i32.sub (i32.const 241) (local.get $p)))
          (then (call $proc_exit (i32.const 15))))
        (call $print_u32 (local.get $count))
        "#
        ),
    )
}

#[tokio::test]
async fn word_count_reads_a_read_only_file_input_and_writes_a_result_path() {
    let mut f = Fixture::with_entry(&word_count_module());
    // Long enough to need several 4 KiB reads, with words straddling chunk boundaries.
    let mut book = String::new();
    for i in 0..5000 {
        book.push_str(if i % 7 == 0 { "lorem\n" } else { "ipsum  dolor\t" });
    }
    let words = book.split_whitespace().count();
    let book_path = f.add_file_input("book.txt", book.as_bytes(), "/inputs/book.txt");
    f.result_path("outputs", "/outputs");
    let (result, _) = run(&f).await;
    let out = expect_ok(result);
    assert_eq!(out.exit_code, 0, "stdout: {}", out.stdout);
    assert_eq!(out.stdout, format!("{words}\n"));
    assert_eq!(f.result_file("outputs/count.txt"), format!("{words}\n"));
    assert_eq!(std::fs::read_to_string(book_path).unwrap(), book, "the input is untouched");
}

#[tokio::test]
async fn inputs_are_read_only() {
    let wasm = module(
        &[
            (1024, "/inputs"),
            (1040, "book.txt"),
            (1056, "new.txt"),
            (1072, "/data"),
            (1088, "a.txt"),
            (1104, "b.txt"),
            (1120, "sub"),
            (1136, "x"),
        ],
        &format!(
            r#"
        (local $in i32) (local $data i32) (local $fd i32)
        (local.set $in (call $find_preopen (i32.const 1024) (i32.const 7)))
        (local.set $data (call $find_preopen (i32.const 1072) (i32.const 5)))
        ;; A file input: open for writing, truncate, create beside it, unlink it.
        (call $try_open (local.get $in) (i32.const 1040) (i32.const 8) (i32.const 0) {FD_WRITE})
        (call $try_open (local.get $in) (i32.const 1040) (i32.const 8) (i32.const 8) {FD_READ})
        (call $try_open (local.get $in) (i32.const 1056) (i32.const 7) (i32.const 1) {FD_WRITE})
        (call $report (i32.sub (i32.const 0) (call $path_unlink_file (local.get $in) (i32.const 1040) (i32.const 8))))
        ;; A directory input: the same, plus mkdir and symlink.
        (call $try_open (local.get $data) (i32.const 1088) (i32.const 5) (i32.const 0) {FD_WRITE})
        (call $try_open (local.get $data) (i32.const 1104) (i32.const 5) {O_CREAT_TRUNC} {FD_WRITE})
        (call $report (i32.sub (i32.const 0) (call $path_unlink_file (local.get $data) (i32.const 1088) (i32.const 5))))
        (call $report (i32.sub (i32.const 0) (call $path_create_directory (local.get $data) (i32.const 1120) (i32.const 3))))
        (call $report (i32.sub (i32.const 0) (call $path_symlink (i32.const 1088) (i32.const 5) (local.get $data) (i32.const 1136) (i32.const 1))))
        ;; Opened for reading: writing through the descriptor and touching its times fail too.
        (local.set $fd (call $open (local.get $data) (i32.const 1088) (i32.const 5) (i32.const 0) {FD_READ}))
        (call $report (local.get $fd))
        (call $report (i32.sub (i32.const 0) (call $write (local.get $fd) (i32.const 1088) (i32.const 5))))
        (call $report (i32.sub (i32.const 0) (call $fd_filestat_set_times (local.get $fd) (i64.const 0) (i64.const 0) (i32.const 10))))
        ;; Reading still works.
        (call $try_open (local.get $in) (i32.const 1040) (i32.const 8) (i32.const 0) {FD_READ})
        "#
        ),
    );
    let mut f = Fixture::with_entry(&wasm);
    let book = f.add_file_input("book.txt", b"read me", "/inputs/book.txt");
    let data = f.add_dir_input("data", &[("a.txt", b"aaa")], "/data");
    let before = std::fs::metadata(data.join("a.txt")).unwrap().modified().unwrap();
    let (result, _) = run(&f).await;
    let out = expect_ok(result);
    const EROFS: &str = "69";
    const EBADF: &str = "8";
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        vec![
            EROFS, EROFS, EROFS, // file input: write, truncate, create
            "10",  // unlink a mounted file: EBUSY
            EROFS, EROFS, EROFS, EROFS,
            EROFS, // dir input: write, create, unlink, mkdir, symlink
            "0",   // open for reading
            EBADF, // fd_write on a read-only descriptor
            EROFS, // fd_filestat_set_times
            "0",   // reading the file input
        ],
        "stdout: {}",
        out.stdout
    );
    assert_eq!(std::fs::read(&book).unwrap(), b"read me");
    assert_eq!(std::fs::read(data.join("a.txt")).unwrap(), b"aaa");
    assert_eq!(std::fs::metadata(data.join("a.txt")).unwrap().modified().unwrap(), before);
    assert!(!data.join("b.txt").exists() && !data.join("sub").exists() && !data.join("x").exists());
    assert!(!f.host("new.txt").exists());
}

#[tokio::test]
async fn nothing_outside_the_preopens_is_reachable() {
    let wasm = module(
        &[
            (1024, "/inputs"),
            (1040, "../../../../../../etc/passwd"), // 28
            (1072, "/etc/passwd"),                  // 11
            (1088, "/outputs"),
            (1104, "../escape.txt"), // 13
            (1120, "ok.txt"),
            (1136, "link"),
            (1152, "--\\n"),
        ],
        &format!(
            r#"
        (local $in i32) (local $out i32)
        (call $list_preopens)
        (call $print (i32.const 1152) (i32.const 3))
        (local.set $in (call $find_preopen (i32.const 1024) (i32.const 7)))
        (local.set $out (call $find_preopen (i32.const 1088) (i32.const 8)))
        (call $try_open (local.get $in) (i32.const 1040) (i32.const 28) (i32.const 0) {FD_READ})
        (call $try_open (local.get $in) (i32.const 1072) (i32.const 11) (i32.const 0) {FD_READ})
        (call $try_open (local.get $out) (i32.const 1040) (i32.const 28) (i32.const 0) {FD_READ})
        (call $try_open (local.get $out) (i32.const 1072) (i32.const 11) (i32.const 0) {FD_READ})
        (call $try_open (local.get $out) (i32.const 1104) (i32.const 13) {O_CREAT_TRUNC} {FD_WRITE})
        (call $report (i32.sub (i32.const 0) (call $path_symlink (i32.const 1072) (i32.const 11) (local.get $out) (i32.const 1136) (i32.const 4))))
        (call $try_open (local.get $out) (i32.const 1120) (i32.const 6) {O_CREAT_TRUNC} {FD_WRITE})
        "#
        ),
    );
    let mut f = Fixture::with_entry(&wasm);
    f.add_file_input("book.txt", b"x", "/inputs/book.txt");
    f.result_path("out", "/outputs");
    let (result, _) = run(&f).await;
    let out = expect_ok(result);
    let (preopens, probes) = out.stdout.split_once("--\n").unwrap();
    assert_eq!(preopens, "/inputs\n/out\n/outputs\n/wasm\n", "only the task's mounts exist");
    let probes: Vec<&str> = probes.lines().collect();
    assert_eq!(probes.len(), 7, "{probes:?}");
    for (i, errno) in probes[..6].iter().enumerate() {
        assert_ne!(*errno, "0", "probe {i} escaped the sandbox: {probes:?}");
    }
    assert_eq!(probes[6], "0", "a plain file in the result path can be created");
    assert!(f.results().join("out/ok.txt").exists());
    assert!(!f.results().join("escape.txt").exists());
    assert!(!f.results().join("out/link").exists());
}

#[tokio::test]
async fn result_paths_are_also_mounted_at_their_name() {
    let wasm = module(
        &[
            (1024, "/results"),
            (1040, "from-name.txt"),
            (1056, "/work/out"),
            (1072, "from-path.txt"),
        ],
        &format!(
            r#"
        (call $try_open (call $find_preopen (i32.const 1024) (i32.const 8)) (i32.const 1040) (i32.const 13) {O_CREAT_TRUNC} {FD_WRITE})
        (call $try_open (call $find_preopen (i32.const 1056) (i32.const 9)) (i32.const 1072) (i32.const 13) {O_CREAT_TRUNC} {FD_WRITE})
        "#
        ),
    );
    let mut f = Fixture::with_entry(&wasm);
    f.result_path("results", "/work/out");
    let (result, _) = run(&f).await;
    let out = expect_ok(result);
    assert_eq!(out.stdout, "0\n0\n");
    assert!(f.results().join("results/from-name.txt").exists());
    assert!(f.results().join("results/from-path.txt").exists());
}

#[tokio::test]
async fn a_file_input_inside_a_directory_input_overlays_it() {
    let wasm = module(
        &[(1024, "/data"), (1040, "a.txt"), (1056, "extra.txt")],
        &format!(
            r#"
        (local $d i32) (local $fd i32)
        (local.set $d (call $find_preopen (i32.const 1024) (i32.const 5)))
        (local.set $fd (call $open (local.get $d) (i32.const 1040) (i32.const 5) (i32.const 0) {FD_READ}))
        (i32.store (i32.const 0) (i32.const 8192)) (i32.store (i32.const 4) (i32.const 100))
        (drop (call $fd_read (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
        (call $print (i32.const 8192) (i32.load (i32.const 8)))
        (local.set $fd (call $open (local.get $d) (i32.const 1056) (i32.const 9) (i32.const 0) {FD_READ}))
        (i32.store (i32.const 0) (i32.const 8192)) (i32.store (i32.const 4) (i32.const 100))
        (drop (call $fd_read (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
        (call $print (i32.const 8192) (i32.load (i32.const 8)))
        "#
        ),
    );
    let mut f = Fixture::with_entry(&wasm);
    f.add_dir_input("data", &[("a.txt", b"from the directory\n")], "/data");
    f.add_file_input("extra.txt", b"from the file input\n", "/data/extra.txt");
    let (result, _) = run(&f).await;
    let out = expect_ok(result);
    assert_eq!(out.stdout, "from the directory\nfrom the file input\n");
}

#[tokio::test]
async fn proc_exit_code_is_data_not_failure() {
    let wasm =
        module(&[(1024, "bye\\n")], &format!("{} (call $proc_exit (i32.const 3))", print(1024, 4)));
    let f = Fixture::with_entry(&wasm);
    let (result, _) = run(&f).await;
    let out = expect_ok(result);
    assert_eq!(out.exit_code, 3);
    assert_eq!(out.stdout, "bye\n");
    assert_eq!(f.result_file("exitCode"), "3");
}

#[tokio::test]
async fn an_infinite_loop_runs_out_of_fuel_under_a_small_cpu_share() {
    let wasm = module(&[], "(loop $forever (br $forever))");
    let mut f = Fixture::with_entry(&wasm);
    // 0.001 cores × 10 s × 2·10⁹ fuel/core·s = 2·10⁷ instructions.
    f.resources.cpu = 0.001;
    f.deadline = Some(Duration::from_secs(10));
    let (result, _) = run(&f).await;
    let (failure, output) = expect_err(result);
    assert_eq!(failure.kind, FailureKind::OutOfFuel, "{failure:?}");
    assert!(failure.message.contains("fuel"), "{}", failure.message);
    let output = output.expect("partial output");
    assert_eq!(output.exit_code, 1);
    assert_eq!(f.result_file("exitCode"), "1");
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_at_the_deadline() {
    let wasm = module(
        &[(1024, "started\\n")],
        &format!("{} (loop $forever (br $forever))", print(1024, 8)),
    );
    let mut f = Fixture::with_entry(&wasm);
    f.deadline = Some(Duration::from_millis(300));
    // So much fuel that only the wall clock can stop it.
    let exec =
        WasmExecutor::new(WasmConfig { fuel_per_core_second: u64::MAX / 4, ..Default::default() });
    let (result, _) = run_with(&exec, &f).await;
    let (failure, output) = expect_err(result);
    assert_eq!(failure.kind, FailureKind::Timeout, "{failure:?}");
    assert_eq!(output.expect("partial output").stdout, "started\n");
    assert_eq!(f.result_file("stdout"), "started\n");
}

#[tokio::test]
async fn the_deadline_also_interrupts_a_sleeping_host_call() {
    // Sleeps an hour in poll_oneoff: only the stoppable scheduler can end this in time.
    let wasm = module(&[], "(call $sleep (i64.const 3600000000000))");
    let mut f = Fixture::with_entry(&wasm);
    f.deadline = Some(Duration::from_millis(300));
    let (result, _) = run(&f).await;
    let (failure, _) = expect_err(result);
    assert_eq!(failure.kind, FailureKind::Timeout, "{failure:?}");
}

/// Regression (issue 12, defect 4): `Instant + Duration` overflowed and panicked the run
/// when a guest slept for `u64::MAX` nanoseconds, or when the ExecutionTimeout was huge.
#[tokio::test]
async fn endless_sleeps_and_huge_deadlines_do_not_panic() {
    let wasm = module(&[], "(call $sleep (i64.const -1))"); // u64::MAX ns
    let mut f = Fixture::with_entry(&wasm);
    f.deadline = Some(Duration::from_millis(300));
    let (result, _) = run(&f).await;
    let (failure, _) = expect_err(result);
    assert_eq!(failure.kind, FailureKind::Timeout, "{failure:?}");

    let wasm = module(&[(1024, "done\\n")], &print(1024, 5));
    let mut f = Fixture::with_entry(&wasm);
    f.deadline = Some(Duration::from_secs(u64::MAX));
    let (result, _) = run(&f).await;
    assert_eq!(expect_ok(result).stdout, "done\n");
}

#[tokio::test]
async fn a_short_sleep_completes() {
    let wasm = module(
        &[(1024, "awake\\n")],
        &format!("(call $sleep (i64.const 30000000)) {}", print(1024, 6)),
    );
    let f = Fixture::with_entry(&wasm);
    let (result, _) = run(&f).await;
    assert_eq!(expect_ok(result).stdout, "awake\n");
}

#[tokio::test]
async fn a_memory_bomb_is_out_of_memory() {
    // Grows by 1 MiB until refused.
    let wasm = module(&[], "(loop $more (drop (memory.grow (i32.const 16))) (br $more))");
    let mut f = Fixture::with_entry(&wasm);
    f.resources.memory = 8 * 1024 * 1024;
    let (result, _) = run(&f).await;
    let (failure, _) = expect_err(result);
    assert_eq!(failure.kind, FailureKind::OutOfMemory, "{failure:?}");
    assert!(failure.message.contains("8.0 MiB"), "{}", failure.message);
}

#[tokio::test]
async fn an_initial_memory_above_the_limit_is_out_of_memory() {
    let wasm = wat::parse_str(
        r#"(module (memory (export "memory") 512) (func (export "_start")))"#, // 32 MiB
    )
    .unwrap();
    let mut f = Fixture::with_entry(&wasm);
    f.resources.memory = 8 * 1024 * 1024;
    let (result, _) = run(&f).await;
    let (failure, _) = expect_err(result);
    assert_eq!(failure.kind, FailureKind::OutOfMemory, "{failure:?}");
}

#[tokio::test]
async fn deep_recursion_is_a_stack_overflow() {
    let wasm = module_with(
        &[],
        r#"
        (func $down (param $n i32) (result i32)
          (i32.add (call $down (i32.add (local.get $n) (i32.const 1))) (i32.const 1)))
        (func (export "_start") (drop (call $down (i32.const 0))))
        "#,
    );
    let f = Fixture::with_entry(&wasm);
    let (result, _) = run(&f).await;
    let (failure, _) = expect_err(result);
    assert_eq!(failure.kind, FailureKind::TaskFailed, "{failure:?}");
    assert!(failure.message.contains("stack overflow"), "{}", failure.message);
}

#[tokio::test]
async fn unreachable_is_a_task_failure_with_partial_output() {
    let wasm = module(&[(1024, "before\\n")], &format!("{} unreachable", print(1024, 7)));
    let f = Fixture::with_entry(&wasm);
    let (result, _) = run(&f).await;
    let (failure, output) = expect_err(result);
    assert_eq!(failure.kind, FailureKind::TaskFailed);
    assert!(failure.message.contains("unreachable"), "{}", failure.message);
    let output = output.unwrap();
    assert_eq!(output.stdout, "before\n");
    assert_eq!(output.error_msg, failure.message);
}

#[tokio::test]
async fn a_missing_entrypoint_is_a_clear_spec_error() {
    let wasm = module(&[], "");
    let mut f = Fixture::with_entry(&wasm);
    f.param("Entrypoint", "main");
    let exec = WasmExecutor::default();
    let err = exec.prepare(&f.ctx()).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::InvalidSpec);
    assert!(err.message.contains("\"main\""), "{}", err.message);
    assert!(err.message.contains("_start"), "lists what is exported: {}", err.message);
}

#[tokio::test]
async fn a_custom_entrypoint_is_called() {
    let wasm = module_with(
        &[(1024, "custom\\n")],
        &format!("(func (export \"main\") {})", print(1024, 7)),
    );
    let mut f = Fixture::with_entry(&wasm);
    f.param("Entrypoint", "main");
    let (result, _) = run(&f).await;
    assert_eq!(expect_ok(result).stdout, "custom\n");
}

#[tokio::test]
async fn module_paths_are_checked_in_prepare() {
    let exec = WasmExecutor::default();

    let mut f = Fixture::new();
    f.param("EntryModule", "/nowhere/main.wasm");
    let err = exec.prepare(&f.ctx()).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::InvalidSpec, "{err:?}");
    assert!(err.message.contains("not provided by any input"), "{}", err.message);

    let mut f = Fixture::new();
    f.add_dir_input("mods", &[("readme.txt", b"no modules here")], "/mods");
    f.param("EntryModule", "/mods/missing.wasm");
    let err = exec.prepare(&f.ctx()).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::ImageUnavailable, "{err:?}");

    f.params.clear();
    f.param("EntryModule", "/mods");
    let err = exec.prepare(&f.ctx()).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::ImageUnavailable, "{err:?}");
    assert!(err.message.contains("without a .wasm"), "{}", err.message);

    let f = Fixture::with_entry(b"(module)");
    let err = exec.prepare(&f.ctx()).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::InvalidSpec, "text modules are refused: {err:?}");

    let f = Fixture::with_entry(b"\0asm\x01\0\0\0garbage");
    let err = exec.prepare(&f.ctx()).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::InvalidSpec, "{err:?}");
    assert!(err.message.contains("not a valid module"), "{}", err.message);

    let exec = WasmExecutor::new(WasmConfig { max_module_bytes: 16, ..Default::default() });
    let f = Fixture::with_entry(NOOP_MODULE);
    let err = exec.prepare(&f.ctx()).await.unwrap_err();
    assert!(err.message.contains("larger than"), "{}", err.message);
}

#[tokio::test]
async fn an_entry_directory_with_one_module_is_resolved() {
    let wasm = module(&[(1024, "from a directory\\n")], &print(1024, 17));
    let mut f = Fixture::new();
    f.add_dir_input("mods", &[("prog.wasm", &wasm), ("notes.txt", b"-")], "/mods");
    // Both the directory itself and a file beneath it work.
    f.param("EntryModule", "/mods");
    let (result, _) = run(&f).await;
    assert_eq!(expect_ok(result).stdout, "from a directory\n");
    f.param("EntryModule", "/mods/prog.wasm");
    let (result, _) = run(&f).await;
    assert_eq!(expect_ok(result).stdout, "from a directory\n");
}

#[tokio::test]
async fn cancel_stops_a_running_module_promptly() {
    let wasm = module(&[], "(loop $forever (br $forever))");
    let mut f = Fixture::with_entry(&wasm);
    f.deadline = None;
    let exec = Arc::new(WasmExecutor::default());
    let ctx = f.ctx();
    exec.prepare(&ctx).await.unwrap();
    let running = {
        let exec = exec.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move { exec.run(&ctx, Arc::new(Collect::default())).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!running.is_finished(), "an infinite loop without deadline keeps running");
    exec.cancel(&ctx.execution_id).await;
    let result = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("run returned after cancel")
        .unwrap();
    let (failure, _) = expect_err(result);
    assert_eq!(failure.kind, FailureKind::Internal);
    assert_eq!(failure.message, "cancelled");
    // Idempotent.
    exec.cancel(&ctx.execution_id).await;
    exec.cleanup(&ctx.execution_id).await;
}

#[tokio::test]
async fn output_streams_to_the_log_sink_while_the_module_runs() {
    let wasm = module(
        &[(1024, "tick\\n")],
        &format!("{} (call $sleep (i64.const 3600000000000))", print(1024, 5)),
    );
    let mut f = Fixture::with_entry(&wasm);
    f.deadline = None;
    let exec = Arc::new(WasmExecutor::default());
    let ctx = f.ctx();
    let logs = Arc::new(Collect::default());
    let running = {
        let (exec, ctx, logs) = (exec.clone(), ctx.clone(), logs.clone());
        tokio::spawn(async move { exec.run(&ctx, logs).await })
    };
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        while logs.text(Stream::Stdout).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(seen.is_ok(), "output reached the sink");
    assert!(!running.is_finished(), "... before the run ended");
    assert_eq!(logs.text(Stream::Stdout), "tick\n");
    exec.cancel(&ctx.execution_id).await;
    let result = tokio::time::timeout(Duration::from_secs(30), running).await.unwrap().unwrap();
    let (failure, output) = expect_err(result);
    assert_eq!(failure.message, "cancelled");
    assert_eq!(output.unwrap().stdout, "tick\n");
}

#[tokio::test]
async fn a_cancel_before_run_is_honoured() {
    let f = Fixture::with_entry(NOOP_MODULE);
    let exec = WasmExecutor::default();
    let ctx = f.ctx();
    exec.prepare(&ctx).await.unwrap();
    exec.cancel(&ctx.execution_id).await;
    let (failure, _) = expect_err(exec.run(&ctx, Arc::new(Collect::default())).await);
    assert_eq!(failure.message, "cancelled");
}

#[tokio::test]
async fn stdout_beyond_the_limit_is_truncated_inline_but_complete_on_disk() {
    let line = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\\n"; // 64 bytes
    let wasm = module(
        &[(1024, line)],
        &format!(
            "(local $i i32) (loop $more {} (local.set $i (i32.add (local.get $i) (i32.const 1))) \
             (br_if $more (i32.lt_u (local.get $i) (i32.const 1600))))",
            print(1024, 64)
        ),
    );
    let mut f = Fixture::with_entry(&wasm);
    f.output_limits = OutputLimits { stdout: 1000, stderr: 1000 };
    let (result, logs) = run(&f).await;
    let out = expect_ok(result);
    assert!(out.stdout_truncated);
    assert!(!out.stderr_truncated);
    assert_eq!(out.stdout.len(), 1000);
    let full = f.result_file("stdout");
    assert_eq!(full.len(), 64 * 1600);
    assert!(full.starts_with(&out.stdout));
    assert_eq!(logs.text(Stream::Stdout), full);
}

#[tokio::test]
async fn import_modules_are_instantiated_and_linked_by_stem_and_declared_name() {
    let by_stem = wat::parse_str(
        r#"(module (func (export "add") (param i32 i32) (result i32)
             (i32.add (local.get 0) (local.get 1))))"#,
    )
    .unwrap();
    // `$mathlib` becomes the module name in the `name` section.
    let by_name = wat::parse_str(
        r#"(module $mathlib (func (export "mul") (param i32 i32) (result i32)
             (i32.mul (local.get 0) (local.get 1))))"#,
    )
    .unwrap();
    let entry = {
        let text = format!(
            "(module\n  (import \"module_0\" \"add\" (func $add (param i32 i32) (result i32)))\n  \
             (import \"mathlib\" \"mul\" (func $mul (param i32 i32) (result i32)))\n{PRELUDE}\n\
             (func (export \"_start\")\n  (call $print_u32 (call $add (i32.const 2) (i32.const 3)))\n  \
             (call $print_u32 (call $mul (i32.const 4) (i32.const 5)))))"
        );
        wat::parse_str(&text).unwrap()
    };
    let mut f = Fixture::with_entry(&entry);
    f.add_file_input("imports/module_0.wasm", &by_stem, "/wasm/imports/module_0.wasm");
    f.add_file_input("imports/lib.wasm", &by_name, "/wasm/imports/lib.wasm");
    f.param(
        "ImportModules",
        serde_json::json!(["/wasm/imports/module_0.wasm", "/wasm/imports/lib.wasm"]),
    );
    let (result, _) = run(&f).await;
    assert_eq!(expect_ok(result).stdout, "5\n20\n");

    // An import nobody provides is caught in prepare.
    f.params.remove("ImportModules");
    let err = WasmExecutor::default().prepare(&f.ctx()).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::InvalidSpec);
    assert!(err.message.contains("module_0.add"), "{}", err.message);
}

#[tokio::test]
async fn adopt_fails_at_once_with_node_restarted() {
    let f = Fixture::with_entry(NOOP_MODULE);
    let exec = WasmExecutor::default();
    let (failure, output) = expect_err(exec.adopt(&f.ctx(), Arc::new(Collect::default())).await);
    assert_eq!(failure.kind, FailureKind::NodeRestarted);
    assert!(output.is_none());
}

#[tokio::test]
async fn run_without_prepare_loads_the_module_itself() {
    let wasm = module(&[(1024, "ok\\n")], &print(1024, 3));
    let f = Fixture::with_entry(&wasm);
    let exec = WasmExecutor::default();
    let out = expect_ok(exec.run(&f.ctx(), Arc::new(Collect::default())).await);
    assert_eq!(out.stdout, "ok\n");
    assert_eq!(exec.engine(), "wasm");
}

#[test]
fn the_noop_module_is_the_minimal_wasi_command() {
    let expected = wat::parse_str(
        r#"(module (type (func)) (func (type 0)) (memory 1)
             (export "_start" (func 0)) (export "memory" (memory 0)))"#,
    )
    .unwrap();
    assert_eq!(NOOP_MODULE, expected.as_slice());
}

#[test]
fn run_module_runs_compiled_modules_repeatedly() {
    let exec = WasmExecutor::default();
    let noop = exec.compile(NOOP_MODULE).unwrap();
    for _ in 0..3 {
        let run = exec.run_module(&noop, &[]).unwrap();
        assert_eq!(run.exit_code, 0);
        assert!(run.stdout.is_empty());
    }
    let echo = exec.run_module_bytes(&echo_module(), &["x".to_string()]).unwrap();
    assert_eq!(String::from_utf8(echo.stdout).unwrap(), "\nx\n--\n");
    assert!(echo.fuel_consumed > 0);
    let err = exec.run_module_bytes(&module(&[], "unreachable"), &[]).unwrap_err();
    assert_eq!(err.kind, FailureKind::TaskFailed);
}

/// Prints a greeting: the module of `examples/hello-wasm.yaml`.
fn hello_module() -> Vec<u8> {
    module(&[(1024, "hello from gadus\\n")], &print(1024, 17))
}

/// The WASM modules shipped in `examples/wasm/` are exactly what these sources build, so the
/// binaries in the repository are reproducible. `GADUS_WRITE_EXAMPLES=1` rewrites them.
#[test]
fn shipped_example_modules_match_their_sources() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wasm");
    for (name, bytes) in [("hello.wasm", hello_module()), ("word-count.wasm", word_count_module())]
    {
        let path = dir.join(name);
        if std::env::var_os("GADUS_WRITE_EXAMPLES").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let shipped = std::fs::read(&path).unwrap();
        assert_eq!(
            shipped,
            bytes,
            "{} is stale: rerun with GADUS_WRITE_EXAMPLES=1",
            path.display()
        );
    }
}

/// Issue 13, item 2: a print loop (2.8 GB per 2 s attempt before) is capped like Docker's
/// output: the result file keeps exactly the limit, the guest's next write fails (EFBIG) and
/// the run fails as the task's fault, saying which limit it crossed, long before its deadline.
#[tokio::test]
async fn a_print_loop_is_stopped_at_the_output_limit() {
    // 1 KiB of 'x' per write, forever; a failed write ends the module with an unreachable.
    let wasm = module(
        &[],
        "(memory.fill (i32.const 4096) (i32.const 120) (i32.const 1024))
         (loop $forever
           (br_if $forever (i32.eqz (call $write (i32.const 1) (i32.const 4096) (i32.const 1024)))))
         (unreachable)",
    );
    let mut f = Fixture::with_entry(&wasm);
    f.deadline = Some(Duration::from_secs(60));
    let exec = WasmExecutor::new(WasmConfig {
        max_output_file_bytes: 1 << 20,
        fuel_per_core_second: u64::MAX / 4,
        ..Default::default()
    });
    let started = std::time::Instant::now();
    let (result, _) = run_with(&exec, &f).await;
    let (failure, _) = expect_err(result);
    assert_eq!(failure.kind, FailureKind::TaskFailed, "{failure:?}");
    assert!(
        failure.message.contains("stdout exceeded the node's output limit of 1048576 bytes"),
        "{failure:?}"
    );
    let kept = std::fs::metadata(f.results().join("stdout")).unwrap().len();
    assert_eq!(kept, 1 << 20, "the file keeps exactly the limit");
    assert!(started.elapsed() < Duration::from_secs(30), "stopped by the limit, not the deadline");
}
