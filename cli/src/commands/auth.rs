//! `gadus id`, `gadus auth info|login|hash-password`.

use std::process::ExitCode;

use serde_json::{Value, json};

use super::Global;

/// `gadus id`.
#[derive(Debug, clap::Args)]
pub struct IdArgs {
    /// Print as json (or the default, a line).
    #[arg(long, default_value = "text", value_parser = ["text", "json", "yaml"])]
    output: String,
}

/// Prints the client ID (made with its key on first use).
pub fn id(g: &Global, args: IdArgs) -> anyhow::Result<ExitCode> {
    let client_id = g.identity().client_id()?;
    match args.output.as_str() {
        "json" => println!("{}", json!({ "ClientID": client_id })),
        "yaml" => println!("ClientID: {client_id}"),
        _ => println!("{client_id}"),
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Subcommand)]
pub enum AuthCommand {
    /// Who you are to the node: your client ID, the token's subject and permissions.
    Info(InfoArgs),
    /// Log in now by the node's methods (otherwise done when the node asks).
    Login,
    /// Hash a password for an ask policy's user list: prints [hash, salt] (Bacalhau's
    /// gen_password). Reads the password from stdin.
    HashPassword,
}

#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// json or text.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
}

pub async fn run(g: &Global, cmd: AuthCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuthCommand::HashPassword => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            let (hash, salt) = crate::auth::hash_password(line.trim_end_matches(['\n', '\r']))?;
            println!("{}", json!([hash, salt]));
            Ok(ExitCode::SUCCESS)
        }
        AuthCommand::Login => {
            let c = g.client()?;
            let method = c.login().await?;
            println!("logged in to {} with {method}", c.base());
            Ok(ExitCode::SUCCESS)
        }
        AuthCommand::Info(args) => {
            let c = g.client()?;
            let identity = g.identity();
            // Ask something any caller may read, so a stale token is renewed first.
            let methods = c.get("/api/v1/auth").await?;
            let token = identity.token(c.base());
            let claims = token.as_deref().and_then(claims_of).unwrap_or(Value::Null);
            let info = json!({
                "API": c.base(),
                "ClientID": identity.client_id()?,
                "Token": token.is_some(),
                "Subject": claims.get("sub").cloned().unwrap_or(Value::Null),
                "Issuer": claims.get("iss").cloned().unwrap_or(Value::Null),
                "Expires": claims.get("exp").cloned().unwrap_or(Value::Null),
                "Namespaces": claims.get("ns").cloned().unwrap_or(Value::Null),
                "Methods": methods.get("Methods").and_then(Value::as_object)
                    .map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default(),
            });
            if args.output == "json" {
                println!("{info}");
            } else {
                for (k, v) in info.as_object().into_iter().flatten() {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        Value::Null => "-".into(),
                        other => other.to_string(),
                    };
                    println!("{k:<11} {v}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A token's claims, read without verifying (only the node can; this is for display).
fn claims_of(token: &str) -> Option<Value> {
    gadus_node::auth::jwt::decode(token).map(|d| Value::Object(d.claims))
}
