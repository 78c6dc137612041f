//! `gadus wasm run MODULE [ARGS..]` and `gadus docker run IMAGE [CMD..]`: build a job from
//! flags (Bacalhau's), submit it, and follow it like `job run`.

use std::process::ExitCode;

use anyhow::{Context, bail};
use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::Global;
use super::job::{WaitArgs, submit_and_wait};

/// Flags shared by `wasm run` and `docker run`.
#[derive(Debug, clap::Args)]
pub struct JobFlags {
    /// Job name.
    #[arg(long)]
    name: Option<String>,
    /// Namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// Partitions to run.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// `any` (batch) or `all` (ops: every matching node).
    #[arg(long, default_value = "any")]
    target: String,
    /// Node selector (`region=eu,gpu in (a100)`).
    #[arg(short = 's', long, alias = "selector")]
    constraints: Option<String>,
    /// Job labels `k=v`.
    #[arg(short = 'l', long = "labels", value_delimiter = ',')]
    labels: Vec<String>,
    /// Environment variables `K=V`.
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Inputs: `ipfs://CID[:/target]`, `https://URL[:/target]`, `s3://bucket/key[:/target]`,
    /// `file:///path[:/target][:rw]`, `inline://text[:/target]`; default target `/inputs`.
    #[arg(short = 'i', long = "input")]
    inputs: Vec<String>,
    /// Result paths `NAME:PATH`.
    #[arg(short = 'o', long = "output")]
    outputs: Vec<String>,
    /// Publisher: `local`, `ipfs`, `noop` or `s3://bucket/key`.
    #[arg(short = 'p', long)]
    publisher: Option<String>,
    /// CPU (`500m`, `2`).
    #[arg(long)]
    cpu: Option<String>,
    /// Memory (`256mb`).
    #[arg(long)]
    memory: Option<String>,
    /// Disk.
    #[arg(long)]
    disk: Option<String>,
    /// GPUs.
    #[arg(long)]
    gpu: Option<String>,
    /// Network: None, Full, HTTP, Host, Bridge.
    #[arg(long)]
    network: Option<String>,
    /// ExecutionTimeout in seconds.
    #[arg(long)]
    timeout: Option<i64>,
    /// QueueTimeout in seconds.
    #[arg(long)]
    queue_timeout: Option<i64>,
    /// Print the job as YAML and exit.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    wait: WaitArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum WasmCommand {
    /// Run a module: a local file (sent inline), an `ipfs://CID` or an `https://` URL.
    Run {
        /// The module.
        module: String,
        /// Arguments for the module.
        args: Vec<String>,
        /// Exported function to call.
        #[arg(long, default_value = "_start")]
        entry_point: String,
        #[command(flatten)]
        flags: JobFlags,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum DockerCommand {
    /// Run an image (with its command and arguments).
    Run {
        /// The image (`name:tag` or `name@sha256:…`).
        image: String,
        /// Command and arguments.
        cmd: Vec<String>,
        /// Override the image's entrypoint.
        #[arg(long)]
        entrypoint: Option<String>,
        /// Working directory (absolute).
        #[arg(short = 'w', long)]
        workdir: Option<String>,
        #[command(flatten)]
        flags: JobFlags,
    },
}

/// Parses Bacalhau's `-i` syntax into an InputSource.
pub fn parse_input(spec: &str) -> anyhow::Result<Value> {
    let (rest, rw) = match spec.strip_suffix(":rw") {
        Some(r) => (r, true),
        None => (spec.strip_suffix(":ro").unwrap_or(spec), false),
    };
    // `scheme://body[:/target]`: the target is the last `:/…` after the scheme.
    let (scheme, body) = rest.split_once("://").with_context(|| {
        format!("input {spec:?} has no scheme (ipfs://, https://, s3://, file://)")
    })?;
    let (body, target) = match body.rfind(":/") {
        Some(i)
            if scheme != "http" && scheme != "https"
                || body[..i].contains('/')
                || body[..i].contains('.') =>
        {
            (&body[..i], body[i + 1..].to_string())
        }
        _ => (body, "/inputs".to_string()),
    };
    let source = match scheme {
        "ipfs" => json!({"Type": "ipfs", "Params": {"CID": body}}),
        "http" | "https" => {
            json!({"Type": "urlDownload", "Params": {"URL": format!("{scheme}://{body}")}})
        }
        "s3" => {
            let (bucket, key) = body.split_once('/').unwrap_or((body, ""));
            json!({"Type": "s3", "Params": {"Bucket": bucket, "Key": key}})
        }
        "file" => json!({"Type": "local", "Params": {"SourcePath": body, "ReadWrite": rw}}),
        other => bail!("unknown input scheme {other:?} in {spec:?}"),
    };
    Ok(json!({"Source": source, "Target": target}))
}

fn build_task(f: &JobFlags, engine: Value, extra_inputs: Vec<Value>) -> anyhow::Result<Value> {
    let mut task = Map::new();
    task.insert("Name".into(), json!("main"));
    task.insert("Engine".into(), engine);
    let mut inputs = extra_inputs;
    for i in &f.inputs {
        inputs.push(parse_input(i)?);
    }
    if !inputs.is_empty() {
        task.insert("InputSources".into(), Value::Array(inputs));
    }
    if !f.outputs.is_empty() {
        let outs: anyhow::Result<Vec<Value>> = f
            .outputs
            .iter()
            .map(|o| {
                let (n, p) = o
                    .split_once(':')
                    .with_context(|| format!("--output expects NAME:PATH, got {o:?}"))?;
                Ok(json!({"Name": n, "Path": p}))
            })
            .collect();
        task.insert("ResultPaths".into(), Value::Array(outs?));
    }
    let publisher =
        f.publisher.clone().or_else(|| (!f.outputs.is_empty()).then(|| "local".to_string()));
    if let Some(p) = publisher {
        let spec = match p.strip_prefix("s3://") {
            Some(rest) => {
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                json!({"Type": "s3", "Params": {"Bucket": bucket, "Key": key}})
            }
            None => json!({"Type": p}),
        };
        task.insert("Publisher".into(), spec);
    }
    if !f.env.is_empty() {
        let mut env = Map::new();
        for e in &f.env {
            let (k, v) =
                e.split_once('=').with_context(|| format!("--env expects K=V, got {e:?}"))?;
            env.insert(k.into(), json!(v));
        }
        task.insert("Env".into(), Value::Object(env));
    }
    let mut res = Map::new();
    for (k, v) in [("CPU", &f.cpu), ("Memory", &f.memory), ("Disk", &f.disk), ("GPU", &f.gpu)] {
        if let Some(v) = v {
            res.insert(k.into(), json!(v));
        }
    }
    if !res.is_empty() {
        task.insert("Resources".into(), Value::Object(res));
    }
    if let Some(n) = &f.network {
        task.insert("Network".into(), json!({"Type": n}));
    }
    let mut t = Map::new();
    if let Some(x) = f.timeout {
        t.insert("ExecutionTimeout".into(), json!(x));
    }
    if let Some(x) = f.queue_timeout {
        t.insert("QueueTimeout".into(), json!(x));
    }
    if !t.is_empty() {
        task.insert("Timeouts".into(), Value::Object(t));
    }
    Ok(Value::Object(task))
}

fn build_job(f: &JobFlags, task: Value) -> anyhow::Result<Value> {
    let mut job = Map::new();
    let kind = match f.target.as_str() {
        "any" => "batch",
        "all" => "ops",
        other => bail!("--target must be any or all, got {other:?}"),
    };
    job.insert("Type".into(), json!(kind));
    if kind == "batch" {
        job.insert("Count".into(), json!(f.count));
    }
    if let Some(n) = &f.name {
        job.insert("Name".into(), json!(n));
    }
    if let Some(n) = &f.namespace {
        job.insert("Namespace".into(), json!(n));
    }
    if let Some(c) = &f.constraints {
        let reqs = gadus_core::model::parse_selector(c)
            .map_err(|e| anyhow::anyhow!("--constraints: {e}"))?;
        job.insert("Constraints".into(), serde_json::to_value(reqs)?);
    }
    if !f.labels.is_empty() {
        let mut m = Map::new();
        for l in &f.labels {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            m.insert(k.into(), json!(v));
        }
        job.insert("Labels".into(), Value::Object(m));
    }
    job.insert("Tasks".into(), json!([task]));
    Ok(Value::Object(job))
}

fn go(g: &Global, f: &JobFlags, job: Value) -> anyhow::Result<ExitCode> {
    if f.dry_run {
        print!("{}", gadus_core::model::codec::to_yaml(&job));
        return Ok(ExitCode::SUCCESS);
    }
    super::runtime()?.block_on(async {
        let c = g.client()?;
        submit_and_wait(&c, job, &f.wait).await
    })
}

/// Largest local module sent inline (the API accepts 10 MB bodies; base64 grows by a third).
const MAX_INLINE_MODULE: u64 = 6 * 1024 * 1024;

pub fn wasm(g: &Global, cmd: WasmCommand) -> anyhow::Result<ExitCode> {
    let WasmCommand::Run { module, args, entry_point, flags } = cmd;
    let name = module
        .rsplit('/')
        .next()
        .filter(|n| n.ends_with(".wasm"))
        .unwrap_or("main.wasm")
        .to_string();
    let target = format!("/wasm/{name}");
    let source = if module.starts_with("ipfs://") {
        json!({"Type": "ipfs", "Params": {"CID": module.trim_start_matches("ipfs://")}})
    } else if module.starts_with("http://") || module.starts_with("https://") {
        json!({"Type": "urlDownload", "Params": {"URL": module}})
    } else {
        let meta =
            std::fs::metadata(&module).with_context(|| format!("reading module {module}"))?;
        if meta.len() > MAX_INLINE_MODULE {
            bail!(
                "module {module} is {} bytes; modules over {MAX_INLINE_MODULE} bytes must be added to the node (gadus data add) and passed as ipfs://CID",
                meta.len()
            );
        }
        let bytes = std::fs::read(&module).with_context(|| format!("reading module {module}"))?;
        let url = format!(
            "data:application/wasm;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        );
        json!({"Type": "inline", "Params": {"URL": url}})
    };
    let engine = json!({"Type": "wasm", "Params": {"EntryModule": target, "Entrypoint": entry_point, "Parameters": args}});
    let task = build_task(&flags, engine, vec![json!({"Source": source, "Target": target})])?;
    let job = build_job(&flags, task)?;
    go(g, &flags, job)
}

pub fn docker(g: &Global, cmd: DockerCommand) -> anyhow::Result<ExitCode> {
    let DockerCommand::Run { image, cmd, entrypoint, workdir, flags } = cmd;
    let mut params = Map::new();
    params.insert("Image".into(), json!(image));
    if let Some(e) = entrypoint {
        params.insert("Entrypoint".into(), json!(e.split_whitespace().collect::<Vec<_>>()));
    }
    if !cmd.is_empty() {
        params.insert("Parameters".into(), json!(cmd));
    }
    if let Some(w) = workdir {
        params.insert("WorkingDirectory".into(), json!(w));
    }
    let task = build_task(&flags, json!({"Type": "docker", "Params": params}), Vec::new())?;
    let job = build_job(&flags, task)?;
    go(g, &flags, job)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_syntax() {
        assert_eq!(parse_input("ipfs://QmX").unwrap()["Target"], "/inputs");
        assert_eq!(parse_input("ipfs://QmX:/data").unwrap()["Target"], "/data");
        let u = parse_input("https://example.org/a.txt:/in/a.txt").unwrap();
        assert_eq!(u["Source"]["Params"]["URL"], "https://example.org/a.txt");
        assert_eq!(u["Target"], "/in/a.txt");
        let f = parse_input("file:///srv/data:/data:rw").unwrap();
        assert_eq!(f["Source"]["Params"]["SourcePath"], "/srv/data");
        assert_eq!(f["Source"]["Params"]["ReadWrite"], true);
        let s = parse_input("s3://bucket/key/prefix/*").unwrap();
        assert_eq!(s["Source"]["Params"]["Bucket"], "bucket");
        assert!(parse_input("nope").is_err());
    }
}
