//! `gadus node list|describe|approve|reject|delete`.

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::output::Format;
use crate::table::render;

use super::Global;

#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// Every node the contacted node knows.
    List {
        /// Label selector (`region=eu,gpu`).
        #[arg(long)]
        labels: Option<String>,
        /// table, json or yaml.
        #[arg(long, default_value = "table")]
        output: String,
    },
    /// One node.
    Describe {
        /// Node ID or unique prefix.
        id: String,
        /// json or yaml.
        #[arg(long, value_enum, default_value_t = Format::Yaml)]
        output: Format,
    },
    /// Approve a pending node.
    Approve {
        /// Node ID.
        id: String,
        /// Why.
        #[arg(short, long, default_value = "")]
        message: String,
    },
    /// Reject a node.
    Reject {
        /// Node ID.
        id: String,
        /// Why.
        #[arg(short, long, default_value = "")]
        message: String,
    },
    /// Forget a node.
    Delete {
        /// Node ID.
        id: String,
        /// Why.
        #[arg(short, long, default_value = "")]
        message: String,
    },
}

fn res(v: &Value) -> String {
    let cpu = v.get("CPU").and_then(Value::as_f64).unwrap_or(0.0);
    let mem = v.get("Memory").and_then(Value::as_u64).unwrap_or(0);
    let gpu = v.get("GPU").and_then(Value::as_u64).unwrap_or(0);
    format!("{cpu:.1} CPU, {}, {gpu} GPU", gadus_core::model::resources::human_bytes(mem))
}

pub async fn run(g: &Global, cmd: NodeCommand) -> anyhow::Result<ExitCode> {
    let c = g.client()?;
    match cmd {
        NodeCommand::List { labels, output } => {
            let mut path = "/api/v1/orchestrator/nodes".to_string();
            if let Some(l) = labels {
                path.push_str(&format!("?labels={}", crate::client::q(&l)));
            }
            let v = c.get(&path).await?;
            let nodes = v.get("Nodes").cloned().unwrap_or(Value::Array(vec![]));
            match output.as_str() {
                "json" => println!("{}", serde_json::to_string_pretty(&nodes)?),
                "yaml" => print!("{}", gadus_core::model::codec::to_yaml(&nodes)),
                _ => {
                    let rows: Vec<Vec<String>> = nodes
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|n| {
                                    let info = &n["Info"];
                                    let labels = info["Labels"]
                                        .as_object()
                                        .map(|m| {
                                            m.iter()
                                                .map(|(k, v)| {
                                                    format!("{k}={}", v.as_str().unwrap_or(""))
                                                })
                                                .collect::<Vec<_>>()
                                                .join(" ")
                                        })
                                        .unwrap_or_default();
                                    vec![
                                        info["NodeID"].as_str().unwrap_or("").to_string(),
                                        info["NodeType"].as_str().unwrap_or("").to_string(),
                                        n["Membership"].as_str().unwrap_or("").to_string(),
                                        n["Connection"].as_str().unwrap_or("").to_string(),
                                        res(&info["ComputeNodeInfo"]["MaxCapacity"]),
                                        res(&info["ComputeNodeInfo"]["AvailableCapacity"]),
                                        super::time_ns(
                                            gadus_core::model::Timestamp::parse_rfc3339(
                                                n["ConnectionState"]["LastHeartbeat"]
                                                    .as_str()
                                                    .unwrap_or(""),
                                            )
                                            .map(|t| t.0)
                                            .unwrap_or(0),
                                        ),
                                        labels,
                                    ]
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    print!(
                        "{}",
                        render(
                            &[
                                "ID",
                                "TYPE",
                                "APPROVAL",
                                "STATUS",
                                "CAPACITY",
                                "AVAILABLE",
                                "LAST HEARTBEAT",
                                "LABELS"
                            ],
                            &rows
                        )
                    );
                }
            }
        }
        NodeCommand::Describe { id, output } => {
            let v = c.get(&format!("/api/v1/orchestrator/nodes/{id}")).await?;
            print!("{}", output.render(&v["Node"], true));
        }
        NodeCommand::Approve { id, message } => return action(&c, &id, "approve", &message).await,
        NodeCommand::Reject { id, message } => return action(&c, &id, "reject", &message).await,
        NodeCommand::Delete { id, message } => return action(&c, &id, "delete", &message).await,
    }
    Ok(ExitCode::SUCCESS)
}

async fn action(
    c: &crate::client::Client,
    id: &str,
    action: &str,
    message: &str,
) -> anyhow::Result<ExitCode> {
    let v = c
        .put(
            &format!("/api/v1/orchestrator/nodes/{id}"),
            &json!({ "Action": action, "Message": message }),
        )
        .await?;
    if v["Success"].as_bool() == Some(true) {
        println!("node {id}: {action} done");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("node {id}: {action} failed: {}", v["Error"].as_str().unwrap_or("unknown error"));
        Ok(ExitCode::FAILURE)
    }
}
