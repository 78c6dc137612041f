//! `gadus version`.

use std::process::ExitCode;

use crate::output::Format;

use super::Global;

/// Version of the gadus client.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only the client's version (do not ask the node).
    #[arg(long)]
    client: bool,
    /// Print as json or yaml instead of text.
    #[arg(long, value_enum)]
    output: Option<Format>,
}

pub async fn run(g: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let server =
        if args.client { None } else { g.client()?.get("/api/v1/agent/version").await.ok() };
    match args.output {
        Some(f) => {
            let v = serde_json::json!({
                "ClientVersion": { "GitVersion": format!("v{VERSION}"), "GOOS": std::env::consts::OS, "GOARCH": std::env::consts::ARCH },
                "ServerVersion": server,
            });
            print!("{}", f.render(&v, true));
        }
        None => {
            println!("Client Version: v{VERSION}");
            if let Some(s) = server {
                let api = s.get("GitVersion").and_then(|v| v.as_str()).unwrap_or("?");
                let build = s.get("GitCommit").and_then(|v| v.as_str()).unwrap_or("?");
                println!("Server Version: {build} (Bacalhau API {api})");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
