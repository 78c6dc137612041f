//! `gadus data`: put data into a node's content store and read it back, with Kubo's CIDs.
//!
//! `add` computes the UnixFS DAG on this machine (so the CID printed is the one `ipfs add`
//! would print) and ships it to the node as a CAR, which the node verifies block by block.
//! `get` does the reverse: it asks the node for a CAR, verifies every block against its CID
//! in a scratch store, and only then writes files — a node cannot hand back different bytes
//! than the CID names. `cat` streams a file as the node serves it; `import`/`export` move
//! CARs.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use gadus_io::content::{
    CarImportOptions, ContentStore, ExportOptions, ImportOptions, hash_path, parse_content_path,
};

use super::Global;

/// Data commands.
#[derive(Debug, clap::Subcommand)]
pub enum DataCommand {
    /// Add a file or directory to the node's store and print its CID.
    Add(AddArgs),
    /// Download a CID (file or directory) into a local path.
    Get(GetArgs),
    /// Print a file's bytes (`CID` or `CID/path/in/dir`).
    Cat(CatArgs),
    /// Import a CARv1 file into the node's store (roots are pinned).
    Import(ImportArgs),
    /// Write a CID's DAG as a CARv1 to stdout.
    Export(ExportArgs),
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// File or directory.
    path: PathBuf,
    /// CID version: 0 (Kubo's default) or 1 (raw leaves).
    #[arg(long, default_value_t = 0)]
    cid_version: u8,
    /// Only compute the CID; store nothing.
    #[arg(long, short = 'n')]
    only_hash: bool,
    /// Print only the CID.
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// CID (or `CID/path`).
    cid: String,
    /// Where to write (default: `./<CID>`).
    #[arg(long, short = 'o', alias = "output")]
    output: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct CatArgs {
    /// `CID` or `CID/path/to/file`.
    path: String,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// A CARv1 file.
    file: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// CID (or `CID/path`).
    cid: String,
}

/// Runs a data command.
pub async fn run(g: &Global, cmd: DataCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DataCommand::Add(a) => add(g, a).await,
        DataCommand::Get(a) => get(g, a).await,
        DataCommand::Cat(a) => stream(g, &a.path, "").await,
        DataCommand::Import(a) => {
            let c = g.client()?;
            let v = c.post_file("/api/v1/data/car", &a.file, "application/vnd.ipld.car").await?;
            for r in v["Roots"].as_array().into_iter().flatten() {
                println!("{}", r.as_str().unwrap_or_default());
            }
            Ok(ExitCode::SUCCESS)
        }
        DataCommand::Export(a) => stream(g, &a.cid, "?format=car").await,
    }
}

/// Streams the node's `/ipfs/` answer for a content path (`CID[/path]`) to stdout.
async fn stream(g: &Global, content_path: &str, query: &str) -> anyhow::Result<ExitCode> {
    let c = g.client()?;
    let (cid, path) = parse_content_path(content_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let sep = if path.is_empty() { "" } else { "/" };
    c.stream_to(&format!("/ipfs/{cid}{sep}{path}{query}"), &mut std::io::stdout()).await?;
    Ok(ExitCode::SUCCESS)
}

fn import_options(version: u8) -> anyhow::Result<ImportOptions> {
    match version {
        0 => Ok(ImportOptions::kubo_v0()),
        1 => Ok(ImportOptions::kubo_v1()),
        v => bail!("--cid-version {v}: only 0 and 1 exist"),
    }
}

async fn add(g: &Global, a: AddArgs) -> anyhow::Result<ExitCode> {
    let opts = import_options(a.cid_version)?;
    if !a.path.exists() {
        bail!("{}: no such file or directory", a.path.display());
    }
    if a.only_hash {
        let path = a.path.clone();
        let imported = tokio::task::spawn_blocking(move || hash_path(&path, &opts))
            .await?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("{}", imported.cid);
        return Ok(ExitCode::SUCCESS);
    }
    let c = g.client()?;
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let car = scratch.path().join("add.car");
    let (path, car2, store_dir) = (a.path.clone(), car.clone(), scratch.path().join("store"));
    let imported = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let store = ContentStore::open(&store_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
        let imported = store.import_path(&path, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
        let f = std::fs::File::create(&car2)?;
        store
            .export_car(&imported.cid, std::io::BufWriter::new(f))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(imported)
    })
    .await??;
    let v = c.post_file("/api/v1/data/car", &car, "application/vnd.ipld.car").await?;
    let stored = v["Roots"]
        .as_array()
        .is_some_and(|r| r.iter().any(|x| x.as_str() == Some(imported.cid.to_string().as_str())));
    if !stored {
        bail!("the node did not confirm storing {}", imported.cid);
    }
    if a.quiet {
        println!("{}", imported.cid);
    } else {
        let name = a.path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        println!("added {} {name} ({} bytes)", imported.cid, imported.size);
    }
    Ok(ExitCode::SUCCESS)
}

/// Downloads `cid` as a CAR from the node, verifies it into a scratch store, exports to `dest`.
pub async fn fetch_verified(
    c: &crate::client::Client,
    cid: &str,
    dest: &std::path::Path,
) -> anyhow::Result<()> {
    let (root, path) = parse_content_path(cid).map_err(|e| anyhow::anyhow!("{e}"))?;
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let car = scratch.path().join("get.car");
    c.download_to(&format!("/ipfs/{root}?format=car"), &car, u64::MAX).await?;
    let (store_dir, dest) = (scratch.path().join("store"), dest.to_path_buf());
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let store = ContentStore::open(&store_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
        let f = std::fs::File::open(&car)?;
        let report = store
            .import_car(std::io::BufReader::new(f), &CarImportOptions::default())
            .map_err(|e| anyhow::anyhow!("the node sent an invalid CAR: {e}"))?;
        if !report.roots.contains(&root) {
            bail!("the node sent a CAR for other roots than {root}");
        }
        let target = store.resolve(&root, &path).map_err(|e| anyhow::anyhow!("{e}"))?;
        store
            .export_with(&target, &dest, &ExportOptions::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    })
    .await??;
    Ok(())
}

async fn get(g: &Global, a: GetArgs) -> anyhow::Result<ExitCode> {
    let c = g.client()?;
    let dest = a
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(a.cid.trim_start_matches("/ipfs/").replace('/', "_")));
    if dest.exists() {
        // An empty directory is a fine target (export creates it afresh); anything else would
        // be overwritten, so refuse.
        if std::fs::remove_dir(&dest).is_err() {
            bail!("{} already exists and is not an empty directory", dest.display());
        }
    }
    fetch_verified(&c, &a.cid, &dest).await?;
    let _ = writeln!(std::io::stderr(), "saved {} to {}", a.cid, dest.display());
    Ok(ExitCode::SUCCESS)
}
