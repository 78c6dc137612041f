//! `gadus` — a compute-over-data node and client that speaks Bacalhau's v1 API.
//!
//! This binary is thin: argument parsing (clap) and printing live here; everything it does is
//! in the library crates (`gadus-core` for the model and decisions, later `gadus-node` for the
//! node runtime).

mod auth;
mod client;
mod commands;
mod output;
mod table;
mod ws_tls;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: placement spends far less time in the allocator than with glibc malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = commands::Cli::parse();
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
