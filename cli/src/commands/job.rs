//! `gadus job ...`: validate, run, list, describe, executions, history, logs, stop.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use gadus_core::model::{Job, MAX_SPEC_BYTES};
use gadus_core::rng::DetRng;
use serde_json::{Value, json};

use crate::client::{Client, q};
use crate::output::Format;
use crate::table::{render, short};

use super::Global;

#[derive(Debug, clap::Subcommand)]
pub enum JobCommand {
    /// Check a job file (YAML or JSON) and print it normalized, or print every problem.
    Validate(ValidateArgs),
    /// Submit a job file and (by default) wait for it to finish.
    Run(RunArgs),
    /// List jobs.
    List(ListArgs),
    /// Show a job, its executions and its output.
    Describe(DescribeArgs),
    /// List a job's executions.
    Executions(IdOut),
    /// Show a job's history.
    History(HistoryArgs),
    /// Show (or follow) a job's output.
    Logs(LogsArgs),
    /// Stop a job.
    Stop(StopArgs),
}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// The job file (YAML or JSON); `-` reads standard input.
    file: PathBuf,
    /// Print the normalized job as yaml (default) or json.
    #[arg(long, value_enum, default_value_t = Format::Yaml)]
    output: Format,
}

/// How to follow a submitted job.
#[derive(Debug, Clone, clap::Args)]
pub struct WaitArgs {
    /// Wait for the job to finish, showing progress (default true; `--wait=false` to return at once).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub wait: bool,
    /// Print only the job ID.
    #[arg(long)]
    pub id_only: bool,
    /// Stream the job's output while it runs.
    #[arg(short, long)]
    pub follow: bool,
    /// Give up waiting after this many seconds (the job keeps running).
    #[arg(long, default_value_t = 600)]
    pub wait_timeout_secs: u64,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The job file (YAML or JSON); `-` reads standard input.
    file: PathBuf,
    #[command(flatten)]
    wait: WaitArgs,
    /// Start an embedded node in this process, run the job on it, print its output, exit.
    #[arg(long)]
    local: bool,
    /// Print the normalized job and exit without submitting.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Label selector.
    #[arg(long)]
    labels: Option<String>,
    /// Page size.
    #[arg(long, default_value_t = 10)]
    limit: usize,
    /// Continue from a previous page.
    #[arg(long)]
    next_token: Option<String>,
    /// Newest first.
    #[arg(long)]
    order_reversed: bool,
    /// Namespace (`*` for all).
    #[arg(long)]
    namespace: Option<String>,
    /// table, json or yaml.
    #[arg(long, default_value = "table")]
    output: String,
}

#[derive(Debug, clap::Args)]
pub struct DescribeArgs {
    /// Job ID, unique prefix or name.
    id: String,
    /// json or yaml (default: a human summary).
    #[arg(long, value_enum)]
    output: Option<Format>,
}

#[derive(Debug, clap::Args)]
pub struct IdOut {
    /// Job ID, unique prefix or name.
    id: String,
    /// table, json or yaml.
    #[arg(long, default_value = "table")]
    output: String,
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Job ID, unique prefix or name.
    id: String,
    /// all, job or execution.
    #[arg(long, default_value = "all")]
    event_type: String,
    /// Only this execution.
    #[arg(long)]
    execution_id: Option<String>,
    /// table, json or yaml.
    #[arg(long, default_value = "table")]
    output: String,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Job ID, unique prefix or name.
    id: String,
    /// Keep streaming until the job ends.
    #[arg(short, long)]
    follow: bool,
    /// Only this execution.
    #[arg(short, long)]
    execution_id: Option<String>,
    /// Only output produced from now on.
    #[arg(short, long)]
    tail: bool,
}

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// Job ID, unique prefix or name.
    id: String,
    /// Print nothing.
    #[arg(long)]
    quiet: bool,
    /// Why (recorded in the job's history).
    #[arg(long, default_value = "")]
    reason: String,
}

pub fn run(g: &Global, cmd: JobCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        JobCommand::Validate(args) => validate(args),
        JobCommand::Run(args) => {
            let bytes = read_spec_file(&args.file)?;
            let mut job = match Job::from_file_bytes(&bytes) {
                Ok(j) => j,
                Err(e) => {
                    eprintln!("The job file {} could not be read: {e}", args.file.display());
                    return Ok(ExitCode::FAILURE);
                }
            };
            if args.dry_run {
                job.normalize(&mut seeded_ids()?);
                print!("{}", Format::Yaml.render(&job, true));
                return Ok(ExitCode::SUCCESS);
            }
            let job = serde_json::to_value(&job)?;
            if args.local {
                return run_local(g, job);
            }
            super::runtime()?.block_on(async {
                let c = g.client()?;
                submit_and_wait(&c, job, &args.wait).await
            })
        }
        other => super::runtime()?.block_on(remote(g, other)),
    }
}

async fn remote(g: &Global, cmd: JobCommand) -> anyhow::Result<ExitCode> {
    let c = g.client()?;
    match cmd {
        JobCommand::List(a) => list(&c, a).await,
        JobCommand::Describe(a) => describe(&c, a).await,
        JobCommand::Executions(a) => executions(&c, a).await,
        JobCommand::History(a) => history(&c, a).await,
        JobCommand::Logs(a) => {
            let mut query = format!("follow={}&tail={}", a.follow, a.tail);
            if let Some(e) = &a.execution_id {
                query.push_str(&format!("&execution_id={}", q(e)));
            }
            c.logs(&a.id, &query, print_log).await?;
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Stop(a) => {
            let v = c
                .delete(
                    &format!("/api/v1/orchestrator/jobs/{}", a.id),
                    &json!({ "reason": a.reason }),
                )
                .await?;
            if !a.quiet {
                match v["EvaluationID"].as_str().filter(|e| !e.is_empty()) {
                    Some(e) => println!("Job stop successfully submitted with evaluation ID: {e}"),
                    None => println!("Job {} is already stopped", a.id),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Validate(_) | JobCommand::Run(_) => unreachable!("handled above"),
    }
}

fn print_log(kind: u64, line: &str) {
    use std::io::Write;
    if kind == 2 {
        let _ = std::io::stderr().write_all(line.as_bytes());
    } else {
        let _ = std::io::stdout().write_all(line.as_bytes());
        let _ = std::io::stdout().flush();
    }
}

/// Reads a job file with a size cap, so a huge or endless file cannot exhaust memory.
pub fn read_spec_file(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let limit = MAX_SPEC_BYTES as u64 + 1;
    let mut buf = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin().take(limit).read_to_end(&mut buf).context("reading standard input")?;
    } else {
        let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        f.take(limit)
            .read_to_end(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
    }
    Ok(buf)
}

fn seeded_ids() -> anyhow::Result<DetRng> {
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    Ok(DetRng::new(u64::from_le_bytes(seed)))
}

fn validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let bytes = read_spec_file(&args.file)?;
    let mut job = match Job::from_file_bytes(&bytes) {
        Ok(job) => job,
        Err(e) => {
            eprintln!("The job file {} could not be read: {e}", args.file.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    let warnings = job.normalize(&mut seeded_ids()?);
    for w in &warnings {
        eprintln!("Warning: {w}");
    }
    match job.validate() {
        Ok(()) => {
            print!("{}", args.output.render(&job, true));
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            eprintln!(
                "The job file {} is not valid ({} problems):",
                args.file.display(),
                errors.0.len()
            );
            for e in &errors.0 {
                eprintln!("  - {e}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Submits a job (JSON) and follows it as asked. The exit code says whether it completed.
pub async fn submit_and_wait(c: &Client, job: Value, w: &WaitArgs) -> anyhow::Result<ExitCode> {
    let resp = c.put("/api/v1/orchestrator/jobs", &json!({ "Job": job })).await?;
    let id = resp["JobID"].as_str().context("the node answered without a JobID")?.to_string();
    for warning in resp["Warnings"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        eprintln!("Warning: {warning}");
    }
    if w.id_only {
        println!("{id}");
    } else {
        println!("Job successfully submitted. Job ID: {id}");
    }
    if !w.wait && !w.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(w.wait_timeout_secs);
    if w.follow {
        let stream = c.logs(&id, "follow=true", print_log);
        if tokio::time::timeout_at(deadline, stream).await.is_err() {
            eprintln!(
                "Stopped waiting after {}s; the job keeps running. Check it with: gadus job describe {id}",
                w.wait_timeout_secs
            );
            return Ok(ExitCode::FAILURE);
        }
    } else if !w.id_only {
        println!("Checking job status... (Ctrl+C to stop watching; the job keeps running)\n");
        if !watch(c, &id, deadline, true).await? {
            eprintln!(
                "Stopped waiting after {}s; the job keeps running. Check it with: gadus job describe {id}",
                w.wait_timeout_secs
            );
            return Ok(ExitCode::FAILURE);
        }
    } else if !watch(c, &id, deadline, false).await? {
        return Ok(ExitCode::FAILURE);
    }
    finish(c, &id, w.id_only).await
}

/// Follows a job's history (long-polling the history endpoint) until it is terminal.
/// Returns false if the deadline passed first.
async fn watch(
    c: &Client,
    id: &str,
    deadline: tokio::time::Instant,
    print: bool,
) -> anyhow::Result<bool> {
    let mut token = String::new();
    loop {
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        let path = format!(
            "/api/v1/orchestrator/jobs/{id}/history?event_type=all&wait=20s&next_token={}",
            q(&token)
        );
        let v = c.get_long(&path, Duration::from_secs(40)).await?;
        for h in v["Items"].as_array().into_iter().flatten() {
            if print {
                print_event(h);
            }
        }
        match v["NextToken"].as_str() {
            Some(t) if !t.is_empty() => token = t.to_string(),
            _ => return Ok(true),
        }
    }
}

fn print_event(h: &Value) {
    let time = h["Time"].as_str().unwrap_or("");
    let time = time
        .split('T')
        .nth(1)
        .unwrap_or(time)
        .split('.')
        .next()
        .unwrap_or("")
        .trim_end_matches('Z');
    let exec = h["ExecutionID"].as_str().map(short).unwrap_or_default();
    let msg = h["Event"]["Message"].as_str().unwrap_or("");
    let state = if let Some(s) = h["JobState"]["New"].as_str() {
        format!("job → {s}")
    } else if let Some(n) = h["ExecutionState"]["New"].as_u64() {
        gadus_core::model::ExecutionStateType::from_i64(n as i64)
            .map(|s| format!("execution → {s}"))
            .unwrap_or_default()
    } else {
        String::new()
    };
    println!("  {time:<8}  {exec:<10}  {state:<24}  {msg}");
}

async fn finish(c: &Client, id: &str, quiet: bool) -> anyhow::Result<ExitCode> {
    let v = c.get(&format!("/api/v1/orchestrator/jobs/{id}?include=executions")).await?;
    let state = v["Job"]["State"]["StateType"].as_str().unwrap_or("Undefined").to_string();
    let message = v["Job"]["State"]["Message"].as_str().unwrap_or("").to_string();
    if state == "Completed" {
        if !quiet {
            println!("\nJob {id} completed.");
            println!("  details:    gadus job describe {id}");
            println!("  executions: gadus job executions {id}");
            println!("  results:    gadus get {id}");
        }
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("\nJob {id} {}: {message}", state.to_lowercase());
        for e in v["Executions"]["Items"].as_array().into_iter().flatten() {
            let err = e["RunOutput"]["ErrorMsg"]
                .as_str()
                .filter(|s| !s.is_empty())
                .or(e["ComputeState"]["Message"].as_str())
                .unwrap_or("");
            eprintln!(
                "  execution {} on {}: {err}",
                short(e["ID"].as_str().unwrap_or("")),
                e["NodeID"].as_str().unwrap_or("")
            );
        }
        Ok(ExitCode::FAILURE)
    }
}

fn run_local(g: &Global, job: Value) -> anyhow::Result<ExitCode> {
    let tmp = tempfile::tempdir().context("creating a temporary data directory")?;
    let data_dir = g.data_dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let mut gl = g.clone();
    gl.data_dir = Some(data_dir);
    let cfg = super::serve::load_config(&gl, &[])?;
    let rt = super::runtime()?;
    rt.block_on(async move {
        let opts = gadus_node::StartOptions {
            api_listen: Some("127.0.0.1:0".parse()?),
            without_network: true,
            ..Default::default()
        };
        let node = gadus_node::start(cfg, opts).await?;
        let c = Client::new("127.0.0.1", node.api_addr.port())?;
        let resp = c.put("/api/v1/orchestrator/jobs", &json!({ "Job": job })).await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                node.shutdown().await;
                return Err(e);
            }
        };
        let id = resp["JobID"].as_str().unwrap_or_default().to_string();
        let done =
            watch(&c, &id, tokio::time::Instant::now() + Duration::from_secs(3600), false).await;
        let v = c.get(&format!("/api/v1/orchestrator/jobs/{id}?include=executions")).await;
        node.shutdown().await;
        done?;
        let v = v?;
        use std::io::Write;
        for e in v["Executions"]["Items"].as_array().into_iter().flatten() {
            let _ = std::io::stdout()
                .write_all(e["RunOutput"]["Stdout"].as_str().unwrap_or("").as_bytes());
            let _ = std::io::stderr()
                .write_all(e["RunOutput"]["stderr"].as_str().unwrap_or("").as_bytes());
        }
        if v["Job"]["State"]["StateType"].as_str() == Some("Completed") {
            Ok(ExitCode::SUCCESS)
        } else {
            eprintln!(
                "Job {} {}: {}",
                id,
                v["Job"]["State"]["StateType"].as_str().unwrap_or(""),
                v["Job"]["State"]["Message"].as_str().unwrap_or("")
            );
            Ok(ExitCode::FAILURE)
        }
    })
}

fn emit(output: &str, v: &Value) -> anyhow::Result<bool> {
    match output {
        "json" => println!("{}", serde_json::to_string_pretty(v)?),
        "yaml" => print!("{}", gadus_core::model::codec::to_yaml(v)),
        "table" | "" => return Ok(false),
        other => bail!("unknown --output {other:?} (table, json or yaml)"),
    }
    Ok(true)
}

async fn list(c: &Client, a: ListArgs) -> anyhow::Result<ExitCode> {
    let mut path =
        format!("/api/v1/orchestrator/jobs?limit={}&reverse={}", a.limit, a.order_reversed);
    if let Some(l) = &a.labels {
        path.push_str(&format!("&labels={}", q(l)));
    }
    if let Some(t) = &a.next_token {
        path.push_str(&format!("&next_token={}", q(t)));
    }
    if let Some(ns) = &a.namespace {
        path.push_str(&format!("&namespace={}", q(ns)));
    }
    let v = c.get(&path).await?;
    if emit(&a.output, &v["Items"])? {
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = v["Items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|j| {
            vec![
                super::time_ns(j["CreateTime"].as_i64().unwrap_or(0)),
                j["ID"].as_str().unwrap_or("").to_string(),
                j["Name"].as_str().unwrap_or("").to_string(),
                j["Type"].as_str().unwrap_or("").to_string(),
                j["State"]["StateType"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    print!("{}", render(&["CREATED", "ID", "NAME", "TYPE", "STATE"], &rows));
    if let Some(t) = v["NextToken"].as_str().filter(|t| !t.is_empty()) {
        println!("\nMore jobs: gadus job list --next-token {t}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn describe(c: &Client, a: DescribeArgs) -> anyhow::Result<ExitCode> {
    let v =
        c.get(&format!("/api/v1/orchestrator/jobs/{}?include=executions,history", a.id)).await?;
    if let Some(f) = a.output {
        print!("{}", f.render(&v, true));
        return Ok(ExitCode::SUCCESS);
    }
    let j = &v["Job"];
    println!("ID            = {}", j["ID"].as_str().unwrap_or(""));
    println!("Name          = {}", j["Name"].as_str().unwrap_or(""));
    println!("Namespace     = {}", j["Namespace"].as_str().unwrap_or(""));
    println!("Type          = {}", j["Type"].as_str().unwrap_or(""));
    println!("State         = {}", j["State"]["StateType"].as_str().unwrap_or(""));
    if let Some(m) = j["State"]["Message"].as_str().filter(|m| !m.is_empty()) {
        println!("Message       = {m}");
    }
    println!("Count         = {}", j["Count"]);
    println!("Created Time  = {}", super::time_ns(j["CreateTime"].as_i64().unwrap_or(0)));
    println!("Modified Time = {}", super::time_ns(j["ModifyTime"].as_i64().unwrap_or(0)));
    let execs: Vec<&Value> = v["Executions"]["Items"].as_array().into_iter().flatten().collect();
    println!("\nExecutions");
    print!("{}", exec_table(&execs));
    for e in &execs {
        let out = &e["RunOutput"];
        if out.is_null() {
            continue;
        }
        println!("\nExecution {} (exit code {}):", e["ID"].as_str().unwrap_or(""), out["ExitCode"]);
        if let Some(s) = out["Stdout"].as_str().filter(|s| !s.is_empty()) {
            println!("Standard Output\n{s}");
        }
        if let Some(s) = out["stderr"].as_str().filter(|s| !s.is_empty()) {
            println!("Standard Error\n{s}");
        }
        if let Some(s) = out["ErrorMsg"].as_str().filter(|s| !s.is_empty()) {
            println!("Error: {s}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn exec_table(execs: &[&Value]) -> String {
    let rows: Vec<Vec<String>> = execs
        .iter()
        .map(|e| {
            let cs = e["ComputeState"]["StateType"]
                .as_i64()
                .and_then(gadus_core::model::ExecutionStateType::from_i64);
            let ds = e["DesiredState"]["StateType"]
                .as_i64()
                .and_then(gadus_core::model::ExecutionDesiredStateType::from_i64);
            vec![
                super::time_ns(e["CreateTime"].as_i64().unwrap_or(0)),
                super::time_ns(e["ModifyTime"].as_i64().unwrap_or(0)),
                e["ID"].as_str().unwrap_or("").to_string(),
                e["NodeID"].as_str().unwrap_or("").to_string(),
                e["Revision"].to_string(),
                cs.map(|s| s.to_string()).unwrap_or_default(),
                ds.map(|s| s.to_string()).unwrap_or_default(),
            ]
        })
        .collect();
    render(
        &["CREATED", "MODIFIED", "ID", "NODE ID", "REV.", "COMPUTE STATE", "DESIRED STATE"],
        &rows,
    )
}

async fn executions(c: &Client, a: IdOut) -> anyhow::Result<ExitCode> {
    let v = c.get(&format!("/api/v1/orchestrator/jobs/{}/executions", a.id)).await?;
    if emit(&a.output, &v["Items"])? {
        return Ok(ExitCode::SUCCESS);
    }
    let execs: Vec<&Value> = v["Items"].as_array().into_iter().flatten().collect();
    print!("{}", exec_table(&execs));
    Ok(ExitCode::SUCCESS)
}

async fn history(c: &Client, a: HistoryArgs) -> anyhow::Result<ExitCode> {
    let mut path =
        format!("/api/v1/orchestrator/jobs/{}/history?event_type={}", a.id, q(&a.event_type));
    if let Some(e) = &a.execution_id {
        path.push_str(&format!("&execution_id={}", q(e)));
    }
    let v = c.get(&path).await?;
    if emit(&a.output, &v["Items"])? {
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = v["Items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            let (prev, new) = if let Some(js) = h.get("JobState") {
                (
                    js["Previous"].as_str().unwrap_or("").to_string(),
                    js["New"].as_str().unwrap_or("").to_string(),
                )
            } else if let Some(es) = h.get("ExecutionState") {
                let f = |x: &Value| {
                    x.as_i64()
                        .and_then(gadus_core::model::ExecutionStateType::from_i64)
                        .map(|s| s.to_string())
                        .unwrap_or_default()
                };
                (f(&es["Previous"]), f(&es["New"]))
            } else {
                (String::new(), String::new())
            };
            vec![
                h["Time"].as_str().unwrap_or("").to_string(),
                h["Type"].as_str().unwrap_or("").replace("Level", ""),
                h["ExecutionID"].as_str().map(short).unwrap_or_default(),
                prev,
                new,
                h["Event"]["Message"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        render(&["TIME", "LEVEL", "EXEC. ID", "PREVIOUS STATE", "NEW STATE", "EVENT"], &rows)
    );
    Ok(ExitCode::SUCCESS)
}
