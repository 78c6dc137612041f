//! `gadus config list|show|set`: the node configuration in the data directory.

use std::process::ExitCode;

use gadus_node::config::set_in_file;

use super::Global;

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Every key with its effective value (defaults < config.yaml < GADUS_* env).
    List,
    /// The effective configuration as YAML.
    Show,
    /// Set a key in `<data dir>/config.yaml`.
    Set {
        /// Key path, e.g. `API.Port` (case-insensitive).
        key: String,
        /// Value (lists and maps comma-separated: `a,b`, `k=v,k2=v2`).
        value: String,
    },
}

pub fn run(g: &Global, cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::List => {
            let cfg = super::serve::load_config(g, &[])?;
            let rows: Vec<Vec<String>> = cfg
                .list()
                .into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    vec![k, v]
                })
                .collect();
            print!("{}", crate::table::render(&["KEY", "VALUE"], &rows));
        }
        ConfigCommand::Show => {
            let cfg = super::serve::load_config(g, &[])?;
            print!("{}", gadus_core::model::codec::to_yaml(&cfg));
        }
        ConfigCommand::Set { key, value } => {
            let path = gadus_node::resolve_data_dir(g.data_dir.clone()).join("config.yaml");
            let k = set_in_file(&path, &key, &value)?;
            println!("{k} = {value} (written to {})", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
