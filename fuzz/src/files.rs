//! Scratch directories and file-tree checks for the targets that write files (archive
//! unpacking, UnixFS export, config files).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// This process's scratch directory, `$TMPDIR/gadus-fuzz-<pid>`. libFuzzer leaves by `exit`
/// without running destructors, so the directories of processes that are gone are swept when
/// the next one starts (`fuzz/run` also points TMPDIR into a directory it removes).
pub(crate) fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let tmp = std::env::temp_dir();
        sweep_stale(&tmp);
        let dir = tmp.join(format!("gadus-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        dir
    })
}

fn sweep_stale(tmp: &Path) {
    if !Path::new("/proc/self").exists() {
        return; // no way to tell a live process from a dead one
    }
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name.to_str().and_then(|n| n.strip_prefix("gadus-fuzz-")?.parse::<u32>().ok());
        if let Some(pid) = pid
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A fresh, empty directory under [`root`] for one input, removed when dropped.
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    pub(crate) fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = root().join(format!("w{}", NEXT.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("create a scratch directory");
        Scratch(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const CANARY: &[u8] = b"nothing may touch this file\n";

/// Puts a file and a directory next to a destination: anything that escapes the destination
/// by `..` lands among them. Returns the canary file's path.
pub(crate) fn plant_canary(dir: &Path) -> PathBuf {
    let canary = dir.join("canary");
    std::fs::write(&canary, CANARY).expect("write the canary");
    std::fs::create_dir(dir.join("canary.d")).expect("create the canary directory");
    canary
}

/// After writing below `dir/dest`: `dir` holds only `dest` (or nothing), the canary file
/// unchanged and the canary directory still empty.
pub(crate) fn assert_only_dest_and_canary(dir: &Path, canary: &Path) {
    let mut names: Vec<OsString> = std::fs::read_dir(dir)
        .expect("list the scratch directory")
        .map(|e| e.expect("a directory entry").file_name())
        .collect();
    names.sort();
    names.retain(|n| n != "dest");
    assert_eq!(names, ["canary", "canary.d"], "something was written next to the destination");
    let meta = std::fs::symlink_metadata(canary).expect("the canary is still there");
    assert!(meta.file_type().is_file(), "the canary was replaced");
    assert_eq!(std::fs::read(canary).expect("read the canary"), CANARY, "the canary changed");
    let inside = std::fs::read_dir(dir.join("canary.d")).expect("list the canary directory");
    assert_eq!(inside.count(), 0, "something was written into the canary directory");
}

/// One file-system object, as far as the checks care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    Dir,
    File { bytes: Vec<u8>, mode: u32 },
    Symlink(PathBuf),
    Other(String),
}

/// Everything below `root` (not following symlinks), by path relative to `root`; the empty
/// path is `root` itself.
pub(crate) fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = if rel.as_os_str().is_empty() { root.to_path_buf() } else { root.join(&rel) };
        let meta = std::fs::symlink_metadata(&abs).expect("stat an entry");
        let ft = meta.file_type();
        let entry = if ft.is_dir() {
            for child in std::fs::read_dir(&abs).expect("list a directory") {
                stack.push(rel.join(child.expect("a directory entry").file_name()));
            }
            Entry::Dir
        } else if ft.is_file() {
            use std::os::unix::fs::MetadataExt;
            assert_eq!(meta.nlink(), 1, "{} is a hard link", rel.display());
            Entry::File {
                bytes: std::fs::read(&abs).expect("read a file"),
                mode: meta.mode() & 0o7777,
            }
        } else if ft.is_symlink() {
            Entry::Symlink(std::fs::read_link(&abs).expect("read a symlink"))
        } else {
            Entry::Other(format!("{ft:?}"))
        };
        out.insert(rel, entry);
    }
    out
}

/// Every symlink in the tree resolves inside `root` (following further symlinks as the
/// kernel would); dangling links are fine as long as they point inside.
pub(crate) fn assert_links_inside(root: &Path, tree: &BTreeMap<PathBuf, Entry>) {
    for (rel, entry) in tree {
        if let Entry::Symlink(target) = entry {
            let parent: Vec<OsString> = match rel.parent() {
                Some(p) => p.iter().map(|c| c.to_os_string()).collect(),
                // `root` itself is a symlink: it resolves from root's parent, outside.
                None => panic!("the destination itself is a symlink to {}", target.display()),
            };
            if let Err(why) = resolve(root, parent, target, 0) {
                panic!(
                    "symlink {} -> {} leaves the destination: {why}",
                    rel.display(),
                    target.display()
                );
            }
        }
    }
}

/// Resolves `target` from directory `at` (components below `root`), following symlinks
/// found inside `root`; `Err` if the walk would go above `root` or to an absolute path.
fn resolve(
    root: &Path,
    mut at: Vec<OsString>,
    target: &Path,
    depth: usize,
) -> Result<Vec<OsString>, String> {
    if depth > 40 {
        return Ok(at); // a loop: the kernel gives ELOOP, which leaves nothing
    }
    for c in target.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => return Err("absolute".into()),
            Component::CurDir => {}
            Component::ParentDir => {
                if at.pop().is_none() {
                    return Err("climbs above the destination".into());
                }
            }
            Component::Normal(name) => {
                let mut here: PathBuf = at.iter().collect();
                here.push(name);
                match std::fs::symlink_metadata(root.join(&here)) {
                    Ok(m) if m.file_type().is_symlink() => {
                        let next =
                            std::fs::read_link(root.join(&here)).map_err(|e| e.to_string())?;
                        at = resolve(root, at, &next, depth + 1)?;
                    }
                    _ => at.push(name.to_os_string()),
                }
            }
        }
    }
    Ok(at)
}
