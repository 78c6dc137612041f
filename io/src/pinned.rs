//! Host paths held open, so that what was checked is exactly what a job gets.
//!
//! A `local` input names a host path that must lie under an allow-listed folder. Checking
//! the path and later handing the *path* to Docker (or opening it again for a WASM guest)
//! is a time-of-check/time-of-use race: anyone who can write inside the allow-listed folder
//! (a local user, or another job with a writable mount) can swap a checked folder for a
//! symlink to `/` between the two (`renameat2(RENAME_EXCHANGE)` in a loop wins within
//! seconds), and the job mounts the host's `/etc` or the Docker socket. Kubernetes had the
//! same hole (CVE-2017-1002101, `subPath`); its fix, followed here, is:
//!
//! 1. open the checked path **without following any symlink** at any component
//!    (`openat2(RESOLVE_NO_SYMLINKS)`, or a component-by-component `openat(O_NOFOLLOW)` walk
//!    on kernels without `openat2`), so the file descriptor refers to the object that lies
//!    at that path under the allow-listed folder, and nothing a symlink pointed at;
//! 2. keep the descriptor open until the job has its mount, and give the engine the
//!    descriptor's magic link `/proc/<pid>/fd/<n>` instead of the path: the kernel resolves
//!    it to the very object opened in step 1, whatever has been renamed since.
//!
//! Docker cannot bind-mount a magic link of another mount namespace directly (runc's mount
//! happens inside the container's new namespace: `EINVAL`), so the executor has the engine
//! mount it into a `local` volume first (`type=none,o=bind,device=/proc/<pid>/fd/<n>`), in
//! the engine's own namespace, and mounts that volume into the container — kubelet's
//! "bind-mount the descriptor to a safe place" step, performed by the engine.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};

/// A host file or directory held open by this process.
#[derive(Clone)]
pub struct PinnedPath {
    fd: Arc<OwnedFd>,
    /// The path that was checked (for messages only: never opened again).
    checked: PathBuf,
    /// `/proc/<pid>/fd/<n>`.
    magic: PathBuf,
    is_dir: bool,
}

impl PinnedPath {
    /// Opens `path` (absolute, without `.` or `..`) following no symlink anywhere in it, and
    /// refuses anything but a regular file or a directory. A symlink met on the way is
    /// `ELOOP`: the path changed since it was resolved, or it is a link.
    pub fn open_no_symlinks(path: &Path) -> io::Result<PinnedPath> {
        let fd = match rustix::fs::openat2(
            rustix::fs::CWD,
            path,
            // No O_NOFOLLOW: with it, a trailing symlink is opened as a link instead of
            // failing; RESOLVE_NO_SYMLINKS refuses it, with every other component.
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => fd,
            // Kernels before 5.6 lack openat2: walk one component at a time instead.
            Err(rustix::io::Errno::NOSYS) => walk_no_symlinks(path)?,
            Err(e) => return Err(e.into()),
        };
        let kind = FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode);
        let is_dir = match kind {
            FileType::Directory => true,
            FileType::RegularFile => false,
            FileType::Symlink => return Err(rustix::io::Errno::LOOP.into()),
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is a {other:?}, not a file or a directory", path.display()),
                ));
            }
        };
        let magic = PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd()));
        Ok(PinnedPath { fd: Arc::new(fd), checked: path.to_path_buf(), magic, is_dir })
    }

    /// `/proc/<pid>/fd/<n>`: opening it (or mounting it, in this process's namespaces)
    /// reaches the pinned object itself.
    pub fn magic_path(&self) -> &Path {
        &self.magic
    }

    /// The path as it was checked (for messages).
    pub fn checked_path(&self) -> &Path {
        &self.checked
    }

    /// Whether it is a directory (else a regular file).
    pub fn is_dir(&self) -> bool {
        self.is_dir
    }
}

/// Component-by-component `openat(O_PATH | O_NOFOLLOW)`: each step opens one name inside
/// the directory the previous step opened, and a symlink is refused instead of followed.
fn walk_no_symlinks(path: &Path) -> io::Result<OwnedFd> {
    let mut components = path.components();
    if components.next() != Some(Component::RootDir) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "the path must be absolute"));
    }
    let flags = OFlags::PATH | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let mut fd = rustix::fs::open("/", flags | OFlags::DIRECTORY, Mode::empty())?;
    for c in components {
        let Component::Normal(name) = c else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the path must not contain `.` or `..`",
            ));
        };
        let next = rustix::fs::openat(&fd, name, flags, Mode::empty())?;
        if FileType::from_raw_mode(rustix::fs::fstat(&next)?.st_mode) == FileType::Symlink {
            return Err(rustix::io::Errno::LOOP.into());
        }
        fd = next;
    }
    Ok(fd)
}

impl PartialEq for PinnedPath {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.fd, &other.fd)
    }
}

impl Eq for PinnedPath {}

impl fmt::Debug for PinnedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PinnedPath({} as {})", self.checked.display(), self.magic.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_directory_stays_what_was_opened_after_a_swap() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let good = root.join("good");
        let secret = root.join("secret");
        std::fs::create_dir_all(&good).unwrap();
        std::fs::create_dir_all(&secret).unwrap();
        std::fs::write(good.join("f"), "good").unwrap();
        std::fs::write(secret.join("f"), "secret").unwrap();
        let pin = PinnedPath::open_no_symlinks(&good).unwrap();
        assert!(pin.is_dir());
        // Swap: the checked name now leads to the secret folder.
        std::fs::rename(&good, root.join("moved")).unwrap();
        std::os::unix::fs::symlink(&secret, &good).unwrap();
        let seen = std::fs::read_to_string(pin.magic_path().join("f")).unwrap();
        assert_eq!(seen, "good", "the magic link reaches the object that was opened");
        // And the link itself is refused when opened again.
        let e = PinnedPath::open_no_symlinks(&good).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(rustix::io::Errno::LOOP.raw_os_error()), "{e}");
    }

    #[test]
    fn symlinks_anywhere_in_the_path_are_refused_by_both_strategies() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let real = root.join("real");
        std::fs::create_dir_all(real.join("inner")).unwrap();
        std::os::unix::fs::symlink(&real, root.join("link")).unwrap();
        let via_link = root.join("link").join("inner");
        assert!(PinnedPath::open_no_symlinks(&via_link).is_err());
        assert!(walk_no_symlinks(&via_link).is_err());
        assert!(walk_no_symlinks(&real.join("inner")).is_ok());
        assert!(walk_no_symlinks(&root.join("real/../real")).is_err());
        assert!(walk_no_symlinks(Path::new("relative")).is_err());
    }

    #[test]
    fn only_files_and_directories_are_pinned() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().canonicalize().unwrap().join("f");
        std::fs::write(&file, "x").unwrap();
        assert!(!PinnedPath::open_no_symlinks(&file).unwrap().is_dir());
        assert!(PinnedPath::open_no_symlinks(Path::new("/dev/null")).is_err());
    }
}
