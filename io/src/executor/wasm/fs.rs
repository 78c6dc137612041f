//! The guest's filesystem: WASI preopens built from the task's inputs and result paths.
//!
//! ## Model
//!
//! A WASI preview-1 guest reaches files only through *preopened directories*; wasi-libc maps an
//! absolute path to the preopen with the longest matching prefix and resolves the rest
//! relative to that directory handle. Nothing else of the host exists for the guest.
//!
//! Each task mount becomes one preopen:
//!
//! - a **directory** mount (a directory input, a result path) is preopened at its target as a
//!   [`GuardedDir`]: a cap-std directory handle (which already refuses `..` escapes, absolute
//!   paths and symlinks leading outside) plus a write policy;
//! - **file** mounts (`/inputs/book.txt` backed by a single host file) are grouped by their
//!   parent and served by a [`VirtualDir`] preopened at that parent (`/inputs`), listing exactly
//!   those files. If the parent is itself inside a directory mount, the virtual directory
//!   overlays that directory's content, so mixing `/data` (directory) and `/data/extra.csv`
//!   (file) works.
//!
//! ## Write policy
//!
//! wasi-common's directories are read-write and it checks no rights besides the read/write
//! mode of open files, so read-only mounts are enforced here: [`GuardedDir`] refuses every
//! mutation (`EROFS`), and files opened through a read-only mount are wrapped in
//! [`ReadOnlyFile`], which also refuses truncation and timestamp changes (the OS would allow
//! `futimens` on a read-only descriptor). Writable mounts refuse only symlink creation: result
//! folders are later read and published by host code, and a guest-made link pointing at
//! `/etc/shadow` must not exist there. Hard links and renames are allowed only between writable
//! mounts, so an input's inode can never gain a writable name.

use std::any::Any;
use std::collections::BTreeMap;
use std::io::{IoSlice, IoSliceMut, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_std::ambient_authority;
use wasmi_wasi::wasi_common::dir::{OpenResult, ReaddirCursor, ReaddirEntity};
use wasmi_wasi::wasi_common::file::{Advice, FdFlags, FileType, Filestat, OFlags};
use wasmi_wasi::wasi_common::snapshots::preview_1::types::Errno;
use wasmi_wasi::wasi_common::sync::dir::Dir as CapStdWasiDir;
use wasmi_wasi::wasi_common::sync::file::File as CapStdWasiFile;
use wasmi_wasi::wasi_common::{Error, SystemTimeSpec, WasiDir, WasiFile};

/// One thing the task sees: a host file or directory at a path inside the task.
#[derive(Clone, Debug)]
pub(crate) struct MountSpec {
    /// Absolute path inside the task.
    pub guest: String,
    /// Where it is on the host.
    pub host: PathBuf,
    /// Whether the task may modify it.
    pub writable: bool,
}

/// Why the preopens could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MountError {
    /// The spec asks for an impossible layout (relative target, overlapping mounts, ...).
    #[error("{0}")]
    Invalid(String),
    /// A host path is missing or cannot be opened.
    #[error("{0}")]
    Unavailable(String),
}

/// A preopened directory: the guest path and the directory serving it.
pub(crate) type Preopen = (String, Box<dyn WasiDir>);

/// Splits an absolute task path into components; `.` and empty components are dropped, `..`
/// is refused (a target must name one place, not climb).
pub(crate) fn guest_components(path: &str) -> Result<Vec<String>, String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not an absolute path"));
    }
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(format!("{path:?} must not contain \"..\"")),
            c => out.push(c.to_string()),
        }
    }
    Ok(out)
}

/// `/a/b` from `["a", "b"]`; `/` from `[]`.
pub(crate) fn guest_display(components: &[String]) -> String {
    format!("/{}", components.join("/"))
}

enum Kind {
    Dir,
    File,
}

struct Resolved {
    components: Vec<String>,
    spec: MountSpec,
    kind: Kind,
}

/// Builds the preopens for `mounts` (sorted by guest path). See the module docs.
pub(crate) fn build_preopens(mounts: &[MountSpec]) -> Result<Vec<Preopen>, MountError> {
    let mut resolved = Vec::with_capacity(mounts.len());
    for m in mounts {
        let components = guest_components(&m.guest).map_err(MountError::Invalid)?;
        let meta = std::fs::metadata(&m.host).map_err(|e| {
            MountError::Unavailable(format!("{} ({}): {e}", m.guest, m.host.display()))
        })?;
        let kind = if meta.is_dir() {
            Kind::Dir
        } else if meta.is_file() {
            Kind::File
        } else {
            return Err(MountError::Unavailable(format!(
                "{} ({}) is neither a file nor a directory",
                m.guest,
                m.host.display()
            )));
        };
        resolved.push(Resolved { components, spec: m.clone(), kind });
    }
    resolved.sort_by(|a, b| a.components.cmp(&b.components));

    // Two mounts at one place, or anything mounted beneath a file, cannot be represented.
    for pair in resolved.windows(2) {
        if pair[0].components == pair[1].components {
            return Err(MountError::Invalid(format!(
                "two mounts at {}",
                guest_display(&pair[0].components)
            )));
        }
    }
    for file in resolved.iter().filter(|r| matches!(r.kind, Kind::File)) {
        if let Some(inner) = resolved.iter().find(|r| {
            r.components.len() > file.components.len() && r.components.starts_with(&file.components)
        }) {
            return Err(MountError::Invalid(format!(
                "{} is mounted inside {}, which is a file",
                inner.spec.guest, file.spec.guest
            )));
        }
    }

    let mut dirs: BTreeMap<Vec<String>, (cap_std::fs::Dir, bool)> = BTreeMap::new();
    let mut file_groups: BTreeMap<Vec<String>, BTreeMap<String, FileMount>> = BTreeMap::new();
    for r in resolved {
        match r.kind {
            Kind::Dir => {
                let dir = cap_std::fs::Dir::open_ambient_dir(&r.spec.host, ambient_authority())
                    .map_err(|e| {
                        MountError::Unavailable(format!(
                            "opening {} ({}): {e}",
                            r.spec.guest,
                            r.spec.host.display()
                        ))
                    })?;
                dirs.insert(r.components, (dir, r.spec.writable));
            }
            Kind::File => {
                let mut parent = r.components;
                // Non-empty: a file mount at `/` is a directory by the metadata check above.
                let name = parent.pop().unwrap_or_default();
                file_groups
                    .entry(parent)
                    .or_default()
                    .insert(name, FileMount { host: r.spec.host, writable: r.spec.writable });
            }
        }
    }

    // Virtual directories whose parent lies strictly inside a directory mount overlay that
    // directory's sub-folder (if it exists). Computed before directory mounts are consumed
    // below, since several groups may borrow the same mount.
    let mut bases: BTreeMap<Vec<String>, GuardedDir> = BTreeMap::new();
    for parent in file_groups.keys() {
        if dirs.contains_key(parent) {
            continue;
        }
        let enclosing =
            dirs.iter().filter(|(p, _)| parent.starts_with(p)).max_by_key(|(p, _)| p.len());
        if let Some((p, (dir, writable))) = enclosing {
            let rel = parent[p.len()..].join("/");
            if let Ok(sub) = dir.open_dir(&rel) {
                bases.insert(parent.clone(), GuardedDir::new(sub, *writable));
            }
        }
    }

    let mut preopens: Vec<Preopen> = Vec::new();
    for (parent, files) in file_groups {
        let base = match dirs.remove(&parent) {
            Some((dir, writable)) => Some(GuardedDir::new(dir, writable)),
            None => bases.remove(&parent),
        };
        preopens.push((guest_display(&parent), Box::new(VirtualDir::new(files, base))));
    }
    for (path, (dir, writable)) in dirs {
        preopens.push((guest_display(&path), Box::new(GuardedDir::new(dir, writable))));
    }
    preopens.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(preopens)
}

fn errno(e: Errno) -> Error {
    e.into()
}

fn read_only() -> Error {
    errno(Errno::Rofs)
}

/// A cap-std directory with a write policy (see the module docs).
pub(crate) struct GuardedDir {
    inner: Box<dyn WasiDir>,
    writable: bool,
}

impl GuardedDir {
    fn new(dir: cap_std::fs::Dir, writable: bool) -> Self {
        GuardedDir { inner: Box::new(CapStdWasiDir::from_cap_std(dir)), writable }
    }

    fn check_writable(&self) -> Result<(), Error> {
        if self.writable { Ok(()) } else { Err(read_only()) }
    }
}

/// The writable directory a rename or link into `dir` at `path` really lands in.
fn writable_target<'a>(dir: &'a dyn WasiDir, path: &str) -> Result<&'a GuardedDir, Error> {
    if let Some(g) = dir.as_any().downcast_ref::<GuardedDir>() {
        g.check_writable()?;
        return Ok(g);
    }
    if let Some(v) = dir.as_any().downcast_ref::<VirtualDir>() {
        return match v.lookup(path) {
            Lookup::Base(_) => match &v.0.base {
                Some(base) => {
                    base.check_writable()?;
                    Ok(base)
                }
                None => Err(read_only()),
            },
            Lookup::Escape => Err(errno(Errno::Perm)),
            Lookup::Itself | Lookup::Entry(..) => Err(errno(Errno::Busy)),
        };
    }
    Err(errno(Errno::Xdev))
}

#[async_trait::async_trait]
impl WasiDir for GuardedDir {
    // Must return `self`, not the inner directory: cap-std's rename/link downcast their
    // destination to a cap-std directory, which would bypass the policy.
    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn open_file(
        &self,
        symlink_follow: bool,
        path: &str,
        oflags: OFlags,
        read: bool,
        write: bool,
        fdflags: FdFlags,
    ) -> Result<OpenResult, Error> {
        if write || oflags.intersects(OFlags::CREATE | OFlags::TRUNCATE | OFlags::EXCLUSIVE) {
            self.check_writable()?;
        }
        let opened =
            self.inner.open_file(symlink_follow, path, oflags, read, write, fdflags).await?;
        Ok(match opened {
            OpenResult::File(f) if self.writable => OpenResult::File(f),
            OpenResult::File(f) => OpenResult::File(Box::new(ReadOnlyFile(f))),
            OpenResult::Dir(d) => {
                OpenResult::Dir(Box::new(GuardedDir { inner: d, writable: self.writable }))
            }
        })
    }

    async fn create_dir(&self, path: &str) -> Result<(), Error> {
        self.check_writable()?;
        self.inner.create_dir(path).await
    }

    async fn readdir(
        &self,
        cursor: ReaddirCursor,
    ) -> Result<Box<dyn Iterator<Item = Result<ReaddirEntity, Error>> + Send>, Error> {
        self.inner.readdir(cursor).await
    }

    async fn symlink(&self, _old_path: &str, _new_path: &str) -> Result<(), Error> {
        self.check_writable()?;
        Err(errno(Errno::Perm))
    }

    async fn remove_dir(&self, path: &str) -> Result<(), Error> {
        self.check_writable()?;
        self.inner.remove_dir(path).await
    }

    async fn unlink_file(&self, path: &str) -> Result<(), Error> {
        self.check_writable()?;
        self.inner.unlink_file(path).await
    }

    async fn read_link(&self, path: &str) -> Result<PathBuf, Error> {
        self.inner.read_link(path).await
    }

    async fn get_filestat(&self) -> Result<Filestat, Error> {
        self.inner.get_filestat().await
    }

    async fn get_path_filestat(
        &self,
        path: &str,
        follow_symlinks: bool,
    ) -> Result<Filestat, Error> {
        self.inner.get_path_filestat(path, follow_symlinks).await
    }

    async fn rename(
        &self,
        path: &str,
        dest_dir: &dyn WasiDir,
        dest_path: &str,
    ) -> Result<(), Error> {
        self.check_writable()?;
        let dest = writable_target(dest_dir, dest_path)?;
        self.inner.rename(path, dest.inner.as_ref(), dest_path).await
    }

    async fn hard_link(
        &self,
        path: &str,
        target_dir: &dyn WasiDir,
        target_path: &str,
    ) -> Result<(), Error> {
        self.check_writable()?;
        let target = writable_target(target_dir, target_path)?;
        self.inner.hard_link(path, target.inner.as_ref(), target_path).await
    }

    async fn set_times(
        &self,
        path: &str,
        atime: Option<SystemTimeSpec>,
        mtime: Option<SystemTimeSpec>,
        follow_symlinks: bool,
    ) -> Result<(), Error> {
        self.check_writable()?;
        self.inner.set_times(path, atime, mtime, follow_symlinks).await
    }
}

/// A file opened through a read-only mount: reads pass, every modification is `EROFS`.
pub(crate) struct ReadOnlyFile(Box<dyn WasiFile>);

#[async_trait::async_trait]
impl WasiFile for ReadOnlyFile {
    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn get_filetype(&self) -> Result<FileType, Error> {
        self.0.get_filetype().await
    }

    #[cfg(unix)]
    fn pollable(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.0.pollable()
    }

    fn isatty(&self) -> bool {
        self.0.isatty()
    }

    async fn datasync(&self) -> Result<(), Error> {
        self.0.datasync().await
    }

    async fn sync(&self) -> Result<(), Error> {
        self.0.sync().await
    }

    async fn get_fdflags(&self) -> Result<FdFlags, Error> {
        self.0.get_fdflags().await
    }

    async fn set_fdflags(&mut self, flags: FdFlags) -> Result<(), Error> {
        if flags.contains(FdFlags::APPEND) {
            return Err(read_only());
        }
        self.0.set_fdflags(flags).await
    }

    async fn get_filestat(&self) -> Result<Filestat, Error> {
        self.0.get_filestat().await
    }

    async fn set_filestat_size(&self, _size: u64) -> Result<(), Error> {
        Err(read_only())
    }

    async fn advise(&self, offset: u64, len: u64, advice: Advice) -> Result<(), Error> {
        self.0.advise(offset, len, advice).await
    }

    async fn set_times(
        &self,
        _atime: Option<SystemTimeSpec>,
        _mtime: Option<SystemTimeSpec>,
    ) -> Result<(), Error> {
        Err(read_only())
    }

    async fn read_vectored<'a>(&self, bufs: &mut [IoSliceMut<'a>]) -> Result<u64, Error> {
        self.0.read_vectored(bufs).await
    }

    async fn read_vectored_at<'a>(
        &self,
        bufs: &mut [IoSliceMut<'a>],
        offset: u64,
    ) -> Result<u64, Error> {
        self.0.read_vectored_at(bufs, offset).await
    }

    async fn write_vectored<'a>(&self, _bufs: &[IoSlice<'a>]) -> Result<u64, Error> {
        Err(read_only())
    }

    async fn write_vectored_at<'a>(
        &self,
        _bufs: &[IoSlice<'a>],
        _offset: u64,
    ) -> Result<u64, Error> {
        Err(read_only())
    }

    async fn seek(&self, pos: SeekFrom) -> Result<u64, Error> {
        self.0.seek(pos).await
    }

    async fn peek(&self, buf: &mut [u8]) -> Result<u64, Error> {
        self.0.peek(buf).await
    }

    fn num_ready_bytes(&self) -> Result<u64, Error> {
        self.0.num_ready_bytes()
    }

    async fn readable(&self) -> Result<(), Error> {
        self.0.readable().await
    }
}

/// A host file mounted at a name inside a [`VirtualDir`].
#[derive(Clone, Debug)]
struct FileMount {
    host: PathBuf,
    writable: bool,
}

impl FileMount {
    fn open(
        &self,
        read: bool,
        write: bool,
        oflags: OFlags,
        fdflags: FdFlags,
    ) -> Result<Box<dyn WasiFile>, Error> {
        let need_write = write || oflags.contains(OFlags::TRUNCATE);
        if need_write && !self.writable {
            return Err(read_only());
        }
        if fdflags.intersects(FdFlags::DSYNC | FdFlags::SYNC | FdFlags::RSYNC) {
            // Same answer as wasi-common's own directories.
            return Err(errno(Errno::Notsup));
        }
        let mut opts = std::fs::OpenOptions::new();
        // wasi-common opens for reading when not writing, so the open always succeeds and the
        // descriptor's access mode decides what the guest may do.
        opts.read(read || !need_write).write(need_write);
        if oflags.contains(OFlags::TRUNCATE) {
            opts.truncate(true);
        }
        if need_write && fdflags.contains(FdFlags::APPEND) {
            opts.append(true);
        }
        let file = opts.open(&self.host)?;
        let file: Box<dyn WasiFile> =
            Box::new(CapStdWasiFile::from_cap_std(cap_std::fs::File::from_std(file)));
        Ok(if self.writable { file } else { Box::new(ReadOnlyFile(file)) })
    }

    async fn filestat(&self) -> Result<Filestat, Error> {
        self.open(true, false, OFlags::empty(), FdFlags::empty())?.get_filestat().await
    }
}

/// What a path inside a [`VirtualDir`] refers to.
enum Lookup<'p> {
    /// The directory itself (`.`, empty).
    Itself,
    /// A mounted file; `true` if the path goes on beneath it (`book.txt/x`).
    Entry(FileMount, bool),
    /// Not a mounted file: the overlaid directory (if any) resolves it.
    Base(&'p str),
    /// Absolute, or `..` out of the directory.
    Escape,
}

struct VirtualInner {
    files: BTreeMap<String, FileMount>,
    base: Option<GuardedDir>,
}

/// A synthetic directory listing mounted files, optionally over a real directory.
#[derive(Clone)]
pub(crate) struct VirtualDir(Arc<VirtualInner>);

impl VirtualDir {
    fn new(files: BTreeMap<String, FileMount>, base: Option<GuardedDir>) -> Self {
        VirtualDir(Arc::new(VirtualInner { files, base }))
    }

    fn lookup<'p>(&self, path: &'p str) -> Lookup<'p> {
        if path.starts_with('/') {
            return Lookup::Escape;
        }
        let mut rest = path;
        loop {
            let (first, tail) = match rest.split_once('/') {
                Some((first, tail)) => (first, Some(tail)),
                None => (rest, None),
            };
            match first {
                "" | "." => match tail {
                    Some(tail) => rest = tail,
                    None => return Lookup::Itself,
                },
                ".." => return Lookup::Escape,
                name => {
                    return match self.0.files.get(name) {
                        Some(m) => Lookup::Entry(m.clone(), tail.is_some()),
                        None => Lookup::Base(path),
                    };
                }
            }
        }
    }

    fn base(&self) -> Option<&GuardedDir> {
        self.0.base.as_ref()
    }

    fn own_filestat(&self) -> Filestat {
        Filestat {
            device_id: 0,
            inode: 0,
            filetype: FileType::Directory,
            nlink: 1,
            size: 0,
            atim: None,
            mtim: None,
            ctim: None,
        }
    }
}

fn inode_of(path: &Path) -> (u64, FileType) {
    match std::fs::metadata(path) {
        Ok(meta) => {
            #[cfg(unix)]
            let inode = std::os::unix::fs::MetadataExt::ino(&meta);
            #[cfg(not(unix))]
            let inode = 0;
            let ft = if meta.is_dir() {
                FileType::Directory
            } else if meta.is_file() {
                FileType::RegularFile
            } else {
                FileType::Unknown
            };
            (inode, ft)
        }
        Err(_) => (0, FileType::Unknown),
    }
}

#[async_trait::async_trait]
impl WasiDir for VirtualDir {
    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn open_file(
        &self,
        symlink_follow: bool,
        path: &str,
        oflags: OFlags,
        read: bool,
        write: bool,
        fdflags: FdFlags,
    ) -> Result<OpenResult, Error> {
        match self.lookup(path) {
            Lookup::Escape => Err(errno(Errno::Perm)),
            Lookup::Itself => {
                if oflags.contains(OFlags::CREATE | OFlags::EXCLUSIVE) {
                    Err(errno(Errno::Exist))
                } else if write || oflags.contains(OFlags::TRUNCATE) {
                    Err(errno(Errno::Isdir))
                } else {
                    Ok(OpenResult::Dir(Box::new(self.clone())))
                }
            }
            Lookup::Entry(_, true) => Err(errno(Errno::Notdir)),
            Lookup::Entry(m, false) => {
                if oflags.contains(OFlags::DIRECTORY) {
                    Err(errno(Errno::Notdir))
                } else if oflags.contains(OFlags::CREATE | OFlags::EXCLUSIVE) {
                    Err(errno(Errno::Exist))
                } else {
                    Ok(OpenResult::File(m.open(read, write, oflags, fdflags)?))
                }
            }
            Lookup::Base(p) => match self.base() {
                Some(base) => base.open_file(symlink_follow, p, oflags, read, write, fdflags).await,
                None if oflags.contains(OFlags::CREATE) => Err(read_only()),
                None => Err(errno(Errno::Noent)),
            },
        }
    }

    async fn create_dir(&self, path: &str) -> Result<(), Error> {
        match self.lookup(path) {
            Lookup::Escape => Err(errno(Errno::Perm)),
            Lookup::Itself | Lookup::Entry(..) => Err(errno(Errno::Exist)),
            Lookup::Base(p) => match self.base() {
                Some(base) => base.create_dir(p).await,
                None => Err(read_only()),
            },
        }
    }

    async fn readdir(
        &self,
        cursor: ReaddirCursor,
    ) -> Result<Box<dyn Iterator<Item = Result<ReaddirEntity, Error>> + Send>, Error> {
        let mut items: Vec<Result<(String, u64, FileType), Error>> = vec![
            Ok((".".to_string(), 0, FileType::Directory)),
            Ok(("..".to_string(), 0, FileType::Directory)),
        ];
        for (name, m) in &self.0.files {
            let (inode, ft) = inode_of(&m.host);
            items.push(Ok((name.clone(), inode, ft)));
        }
        if let Some(base) = self.base() {
            for entry in base.readdir(ReaddirCursor::from(0)).await? {
                match entry {
                    Ok(e) if e.name == "." || e.name == ".." => {}
                    Ok(e) if self.0.files.contains_key(&e.name) => {}
                    Ok(e) => items.push(Ok((e.name, e.inode, e.filetype))),
                    Err(err) => items.push(Err(err)),
                }
            }
        }
        let start = u64::from(cursor);
        let entries: Vec<Result<ReaddirEntity, Error>> = items
            .into_iter()
            .enumerate()
            .skip(usize::try_from(start).unwrap_or(usize::MAX))
            .map(|(i, item)| {
                item.map(|(name, inode, filetype)| ReaddirEntity {
                    next: ReaddirCursor::from(i as u64 + 1),
                    inode,
                    name,
                    filetype,
                })
            })
            .collect();
        Ok(Box::new(entries.into_iter()))
    }

    async fn symlink(&self, _old_path: &str, _new_path: &str) -> Result<(), Error> {
        // Same policy as writable directories; read-only ones refuse anyway.
        Err(errno(Errno::Perm))
    }

    async fn remove_dir(&self, path: &str) -> Result<(), Error> {
        match self.lookup(path) {
            Lookup::Escape => Err(errno(Errno::Perm)),
            Lookup::Itself => Err(errno(Errno::Busy)),
            Lookup::Entry(..) => Err(errno(Errno::Notdir)),
            Lookup::Base(p) => match self.base() {
                Some(base) => base.remove_dir(p).await,
                None => Err(errno(Errno::Noent)),
            },
        }
    }

    async fn unlink_file(&self, path: &str) -> Result<(), Error> {
        match self.lookup(path) {
            Lookup::Escape => Err(errno(Errno::Perm)),
            Lookup::Itself => Err(errno(Errno::Isdir)),
            // A mount point cannot be removed (Linux says EBUSY too).
            Lookup::Entry(..) => Err(errno(Errno::Busy)),
            Lookup::Base(p) => match self.base() {
                Some(base) => base.unlink_file(p).await,
                None => Err(errno(Errno::Noent)),
            },
        }
    }

    async fn read_link(&self, path: &str) -> Result<PathBuf, Error> {
        match self.lookup(path) {
            Lookup::Escape => Err(errno(Errno::Perm)),
            Lookup::Itself | Lookup::Entry(..) => Err(errno(Errno::Inval)),
            Lookup::Base(p) => match self.base() {
                Some(base) => base.read_link(p).await,
                None => Err(errno(Errno::Noent)),
            },
        }
    }

    async fn get_filestat(&self) -> Result<Filestat, Error> {
        match self.base() {
            Some(base) => base.get_filestat().await,
            None => Ok(self.own_filestat()),
        }
    }

    async fn get_path_filestat(
        &self,
        path: &str,
        follow_symlinks: bool,
    ) -> Result<Filestat, Error> {
        match self.lookup(path) {
            Lookup::Escape => Err(errno(Errno::Perm)),
            Lookup::Itself => self.get_filestat().await,
            Lookup::Entry(_, true) => Err(errno(Errno::Notdir)),
            Lookup::Entry(m, false) => m.filestat().await,
            Lookup::Base(p) => match self.base() {
                Some(base) => base.get_path_filestat(p, follow_symlinks).await,
                None => Err(errno(Errno::Noent)),
            },
        }
    }

    async fn rename(
        &self,
        path: &str,
        dest_dir: &dyn WasiDir,
        dest_path: &str,
    ) -> Result<(), Error> {
        match self.lookup(path) {
            Lookup::Escape => Err(errno(Errno::Perm)),
            Lookup::Itself | Lookup::Entry(..) => Err(errno(Errno::Busy)),
            Lookup::Base(p) => match self.base() {
                Some(base) => base.rename(p, dest_dir, dest_path).await,
                None => Err(errno(Errno::Noent)),
            },
        }
    }

    async fn hard_link(
        &self,
        path: &str,
        target_dir: &dyn WasiDir,
        target_path: &str,
    ) -> Result<(), Error> {
        match self.lookup(path) {
            Lookup::Escape => Err(errno(Errno::Perm)),
            // Linking a mounted file elsewhere would give it a name outside its mount's policy.
            Lookup::Itself | Lookup::Entry(..) => Err(errno(Errno::Perm)),
            Lookup::Base(p) => match self.base() {
                Some(base) => base.hard_link(p, target_dir, target_path).await,
                None => Err(errno(Errno::Noent)),
            },
        }
    }

    async fn set_times(
        &self,
        path: &str,
        atime: Option<SystemTimeSpec>,
        mtime: Option<SystemTimeSpec>,
        follow_symlinks: bool,
    ) -> Result<(), Error> {
        match self.lookup(path) {
            Lookup::Escape => Err(errno(Errno::Perm)),
            Lookup::Itself => match self.base() {
                Some(base) => base.set_times(".", atime, mtime, follow_symlinks).await,
                None => Err(read_only()),
            },
            Lookup::Entry(_, true) => Err(errno(Errno::Notdir)),
            Lookup::Entry(m, false) => {
                m.open(false, true, OFlags::empty(), FdFlags::empty())?
                    .set_times(atime, mtime)
                    .await
            }
            Lookup::Base(p) => match self.base() {
                Some(base) => base.set_times(p, atime, mtime, follow_symlinks).await,
                None => Err(errno(Errno::Noent)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(guest: &str, host: &Path) -> MountSpec {
        MountSpec { guest: guest.to_string(), host: host.to_path_buf(), writable: false }
    }

    #[test]
    fn guest_paths_are_absolute_and_never_climb() {
        assert_eq!(guest_components("/a/./b//c/").unwrap(), ["a", "b", "c"]);
        assert!(guest_components("/").unwrap().is_empty());
        assert!(guest_components("a/b").is_err());
        assert!(guest_components("/a/../b").is_err());
        assert_eq!(guest_display(&[]), "/");
        assert_eq!(guest_display(&["a".to_string(), "b".to_string()]), "/a/b");
    }

    #[test]
    fn file_mounts_share_their_parent_and_overlay_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dir");
        std::fs::create_dir(&dir).unwrap();
        let file = tmp.path().join("f.txt");
        std::fs::write(&file, b"x").unwrap();
        let preopens = build_preopens(&[
            mount("/inputs/a.txt", &file),
            mount("/inputs/b.txt", &file),
            mount("/data", &dir),
            mount("/data/extra.txt", &file),
            mount("/other", &dir),
        ])
        .unwrap();
        let paths: Vec<&str> = preopens.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["/data", "/inputs", "/other"]);
        assert!(preopens[0].1.as_any().downcast_ref::<VirtualDir>().is_some());
        assert!(preopens[1].1.as_any().downcast_ref::<VirtualDir>().is_some());
        assert!(preopens[2].1.as_any().downcast_ref::<GuardedDir>().is_some());
    }

    #[test]
    fn impossible_layouts_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f.txt");
        std::fs::write(&file, b"x").unwrap();
        let twice = build_preopens(&[mount("/a", tmp.path()), mount("/a/", tmp.path())]);
        assert!(matches!(twice, Err(MountError::Invalid(_))));
        let under_file = build_preopens(&[mount("/f", &file), mount("/f/g", tmp.path())]);
        assert!(matches!(under_file, Err(MountError::Invalid(_))));
        let relative = build_preopens(&[mount("data", tmp.path())]);
        assert!(matches!(relative, Err(MountError::Invalid(_))));
        let missing = build_preopens(&[mount("/m", &tmp.path().join("missing"))]);
        assert!(matches!(missing, Err(MountError::Unavailable(_))));
    }

    #[test]
    fn virtual_paths_resolve_to_entries_the_base_or_nowhere() {
        let mut files = BTreeMap::new();
        files.insert(
            "book.txt".to_string(),
            FileMount { host: PathBuf::from("/x"), writable: false },
        );
        let v = VirtualDir::new(files, None);
        assert!(matches!(v.lookup(""), Lookup::Itself));
        assert!(matches!(v.lookup("./."), Lookup::Itself));
        assert!(matches!(v.lookup("book.txt"), Lookup::Entry(_, false)));
        assert!(matches!(v.lookup("./book.txt"), Lookup::Entry(_, false)));
        assert!(matches!(v.lookup("book.txt/"), Lookup::Entry(_, true)));
        assert!(matches!(v.lookup("book.txt/../book.txt"), Lookup::Entry(_, true)));
        assert!(matches!(v.lookup("other/x"), Lookup::Base("other/x")));
        assert!(matches!(v.lookup(".."), Lookup::Escape));
        assert!(matches!(v.lookup("./../x"), Lookup::Escape));
        assert!(matches!(v.lookup("/etc/passwd"), Lookup::Escape));
    }
}
