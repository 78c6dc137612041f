//! A tiny local image for tests and benchmarks, built without any registry.
//!
//! The rootfs is made here: a static busybox (`/bin/busybox` from Debian's `busybox-static`,
//! or the file named by `GADUS_BUSYBOX`) with one symlink per applet, `/etc/passwd` and
//! `/etc/group` knowing `root` and `nobody` (65534), and a world-writable `/tmp`. It is imported
//! as an image with `POST /images/create?fromSrc=-` (what `docker import` does), with
//! Dockerfile-style `changes` (`ENV`, `CMD`, `USER`, `VOLUME`, ...) applied on import.
//!
//! [`ensure_busybox`] is idempotent: an existing tag is reused, and calls in one process are
//! serialised so concurrent tests import once.

use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures::StreamExt;

use super::{DockerError, is_static_elf, split_reference};

/// Where the static busybox is looked for when `GADUS_BUSYBOX` is unset.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";

/// The `changes` every busybox image gets.
pub const BASE_CHANGES: &[&str] = &["ENV PATH=/bin", "CMD [\"/bin/sh\"]"];

/// Applets linked when `busybox --list` cannot be run.
const FALLBACK_APPLETS: &[&str] = &[
    "sh", "cat", "echo", "ls", "mkdir", "rm", "sleep", "true", "false", "id", "env", "pwd", "head",
    "tail", "tr", "wc", "touch", "wget", "nc", "dd", "seq", "grep", "sed", "test",
];

static IMPORT_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The static busybox binary to use.
pub fn busybox_path() -> PathBuf {
    std::env::var_os("GADUS_BUSYBOX").map_or_else(|| PathBuf::from(DEFAULT_BUSYBOX), PathBuf::from)
}

/// Builds the rootfs tar (in memory; about 2 MB).
pub fn rootfs_tar(busybox: &Path) -> Result<Vec<u8>, DockerError> {
    let missing = || {
        DockerError::Image(format!(
            "{} is not a static busybox; install it (apt-get install -y busybox-static) \
             or point GADUS_BUSYBOX at one",
            busybox.display()
        ))
    };
    if !is_static_elf(busybox).map_err(|_| missing())? {
        return Err(missing());
    }
    let binary = std::fs::read(busybox)?;
    let applets = applets(busybox);

    let mut tar = tar::Builder::new(Vec::new());
    let mut dir = |path: &str, mode: u32| -> std::io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        h.set_mtime(0);
        tar.append_data(&mut h, path, std::io::empty())
    };
    for (d, mode) in [
        ("bin", 0o755),
        ("etc", 0o755),
        ("tmp", 0o1777),
        ("root", 0o700),
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
    ] {
        dir(d, mode)?;
    }
    let file = |tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        tar.append_data(&mut h, path, data)
    };
    file(&mut tar, "bin/busybox", 0o755, &binary)?;
    file(
        &mut tar,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    file(&mut tar, "etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")?;
    for applet in applets.iter().filter(|a| a.as_str() != "busybox") {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_mtime(0);
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    Ok(tar.into_inner()?)
}

/// The applet names busybox reports (plain names only), or a fixed list.
fn applets(busybox: &Path) -> Vec<String> {
    let listed = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::trim)
                .filter(|a| {
                    !a.is_empty()
                        && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_.[".contains(c))
                })
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if listed.is_empty() {
        FALLBACK_APPLETS.iter().map(|s| s.to_string()).collect()
    } else {
        listed
    }
}

/// Ensures `tag` (`repo:tag`) exists as the busybox image with [`BASE_CHANGES`]; returns its
/// image ID.
pub async fn ensure_busybox(docker: &Docker, tag: &str) -> Result<String, DockerError> {
    ensure_busybox_with(docker, tag, &[]).await
}

/// Like [`ensure_busybox`], with extra Dockerfile-style `changes` (`USER 1000`, `VOLUME /data`,
/// `WORKDIR /w`, ...). An existing `tag` is reused as is, whatever its changes.
pub async fn ensure_busybox_with(
    docker: &Docker,
    tag: &str,
    changes: &[&str],
) -> Result<String, DockerError> {
    let _serial = IMPORT_LOCK.lock().await;
    if let Ok(img) = docker.inspect_image(tag).await
        && let Some(id) = img.id
    {
        return Ok(id);
    }
    let rootfs = rootfs_tar(&busybox_path())?;
    let (repo, version, _) = split_reference(tag);
    let all_changes: Vec<String> =
        BASE_CHANGES.iter().chain(changes).map(|s| s.to_string()).collect();
    let opts = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(version.unwrap_or("latest"))
        .changes(all_changes)
        .build();
    let mut progress =
        docker.create_image(Some(opts), Some(bollard::body_full(rootfs.into())), None);
    while let Some(step) = progress.next().await {
        step.map_err(|e| DockerError::Image(format!("importing {tag}: {e}")))?;
    }
    docker
        .inspect_image(tag)
        .await?
        .id
        .ok_or_else(|| DockerError::Image(format!("{tag} was imported but has no ID")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_refuses_a_non_static_binary() {
        let me = std::env::current_exe().unwrap();
        let err = rootfs_tar(&me).unwrap_err().to_string();
        assert!(err.contains("busybox-static"), "{err}");
    }

    #[test]
    fn rootfs_has_busybox_applets_and_users() {
        let path = busybox_path();
        if !is_static_elf(&path).unwrap_or(false) {
            let required = std::env::var_os("CI").is_some()
                || std::env::var_os("GADUS_REQUIRE_DOCKER").is_some();
            assert!(
                !required,
                "no static busybox at {} (run .ci/docker-test-deps.sh)",
                path.display()
            );
            eprintln!(
                "skipped: no static busybox at {} (apt-get install -y busybox-static)",
                path.display()
            );
            return;
        }
        let tar = rootfs_tar(&path).unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in ["bin/busybox", "bin/sh", "bin/cat", "etc/passwd", "tmp"] {
            assert!(names.iter().any(|n| n.trim_end_matches('/') == want), "{want} missing");
        }
    }
}
