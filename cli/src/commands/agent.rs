//! `gadus agent alive|version|node|config`.

use std::process::ExitCode;

use crate::output::Format;

use super::Global;

#[derive(Debug, clap::Subcommand)]
pub enum AgentCommand {
    /// Is the node alive?
    Alive(Out),
    /// The node's version.
    Version(Out),
    /// The node's description.
    Node(Out),
    /// The node's configuration.
    Config(Out),
}

#[derive(Debug, clap::Args)]
pub struct Out {
    /// json or yaml (default yaml).
    #[arg(long, value_enum, default_value_t = Format::Yaml)]
    output: Format,
}

pub async fn run(g: &Global, cmd: AgentCommand) -> anyhow::Result<ExitCode> {
    let c = g.client()?;
    let (path, out) = match &cmd {
        AgentCommand::Alive(o) => ("/api/v1/agent/alive", o),
        AgentCommand::Version(o) => ("/api/v1/agent/version", o),
        AgentCommand::Node(o) => ("/api/v1/agent/node", o),
        AgentCommand::Config(o) => ("/api/v1/agent/config", o),
    };
    let v = c.get(path).await?;
    print!("{}", out.output.render(&v, true));
    Ok(ExitCode::SUCCESS)
}
