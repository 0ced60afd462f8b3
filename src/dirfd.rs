//! Filesystem operations relative to directory handles, for restore.
//!
//! A root restore must not be redirectable by another user who can write to
//! a directory around its destination (contract, guarantee 7; issue 10). A
//! path looked up twice can lead somewhere else the second time, so restore
//! never does that: it opens each directory it works in once, with
//! `O_NOFOLLOW | O_DIRECTORY`, holds the handle, and does everything else
//! relative to it (`openat`, `mkdirat`, `symlinkat`, `linkat`, `renameat2`,
//! `unlinkat`, `fchmod`, `fchown`), never following a symlink in a last
//! component.
//!
//! [`Dir::open_path`] is the one place a configured path is resolved: one
//! component at a time, following a symlink only where no other user could
//! have put it there. [`Dir::make_staging`] creates a private (0700) staging
//! directory, and [`safe_staging_parent`] says whether a directory is fit to
//! hold one.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, Stat, Timespec, Timestamps, UTIME_OMIT};

/// A directory opened once; `path` is only for messages.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Symlinks followed by one [`Dir::open_path`], as the kernel's limit.
const MAX_LINKS: usize = 40;

fn is_dir(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn is_symlink(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

fn me() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Whether a user other than root and us could add, remove or rename
/// entries of a directory with this status.
fn others_can_write(st: &Stat) -> bool {
    let mode = st.st_mode;
    (st.st_uid != 0 && st.st_uid != me() && mode & 0o200 != 0)
        || (st.st_gid != 0 && mode & 0o020 != 0)
        || mode & 0o002 != 0
}

/// Why a directory must not hold a staging directory, or `None` if it may:
/// only its owner can change its entries, or it is sticky and owned by root
/// or us (like /tmp: others cannot rename or remove what we create).
///
/// An owner other than root or us is accepted: the app user who owns
/// `/srv/shop` can already rename or replace `/srv/shop/media` itself, so a
/// staging directory beside it gives that user no power they lack, and
/// everything restore does there goes through handles it opened itself,
/// with the identity (device, inode) of what it renames checked after the
/// rename and before anything is removed. Group- or world-writable
/// directories (not sticky) are refused: they let users who have no say
/// over the destination move entries around in it.
pub fn unsafe_staging_parent(st: &Stat) -> Option<String> {
    let mode = st.st_mode;
    let group = st.st_gid != 0 && mode & 0o020 != 0;
    let world = mode & 0o002 != 0;
    if !group && !world {
        return None;
    }
    let sticky = mode & 0o1000 != 0;
    if sticky && (st.st_uid == 0 || st.st_uid == me()) {
        return None;
    }
    Some(if world {
        format!("its mode {:o} lets every user write to it", mode & 0o7777)
    } else {
        format!(
            "its mode {:o} lets the users of group {} write to it",
            mode & 0o7777,
            st.st_gid
        )
    })
}

/// A file's identity, to tell whether a name still leads to what we made.
pub fn identity(st: &Stat) -> (u64, u64) {
    (st.st_dev, st.st_ino)
}

/// Whether `st` (a directory) is fit to hold a staging directory.
pub fn safe_staging_parent(st: &Stat) -> bool {
    unsafe_staging_parent(st).is_none()
}

impl AsFd for Dir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn single(name: &OsStr) -> io::Result<&OsStr> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a single path component"),
        ));
    }
    Ok(name)
}

fn mode(m: u32) -> Mode {
    Mode::from_bits_truncate(m)
}

impl Dir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in this directory, for messages.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
        })
    }

    fn root() -> io::Result<Dir> {
        let fd = rustix::fs::open("/", DIR_FLAGS, Mode::empty())?;
        Ok(Dir {
            fd,
            path: PathBuf::from("/"),
        })
    }

    /// Opens the directory at `path` (made absolute against the current
    /// directory), one component at a time without following symlinks,
    /// except a symlink in a directory that only root or we can write to
    /// (and, in a sticky one, a symlink owned by root or us): the kernel's
    /// own `protected_symlinks` rule, made strict. A symlink anywhere else
    /// is refused, since another user could have put it there. With
    /// `create`, missing directories are created with that mode.
    pub fn open_path(path: &Path, create: Option<u32>) -> io::Result<Dir> {
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()?.join(path)
        };
        let mut todo: Vec<OsString> = Vec::new();
        push_components(&mut todo, &abs);
        let mut stack = vec![Dir::root()?];
        let mut links = 0;
        while let Some(name) = todo.pop() {
            if name == ".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let cur = stack.last().expect("root stays");
            match cur.open_dir(&name) {
                Ok(d) => {
                    stack.push(d);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create.is_some() => {
                    match cur.mkdir(&name, create.unwrap_or(0o700)) {
                        Ok(()) => {
                            let d = cur.open_dir(&name)?;
                            // Umask aside, it gets the mode asked for, if it
                            // is the one we just made.
                            if d.stat()?.st_uid == me() {
                                d.chmod(create.unwrap_or(0o700))?;
                            }
                            stack.push(d);
                        }
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            todo.push(name);
                        }
                        Err(e) => return Err(e),
                    }
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                    if !cur.stat_at(&name).map(|s| is_symlink(&s)).unwrap_or(false) {
                        return Err(io::Error::new(
                            io::ErrorKind::NotADirectory,
                            format!("{} is not a directory", cur.join(&name).display()),
                        ));
                    }
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("{}: {e}", cur.join(&name).display()),
                    ));
                }
            }
            // A symlink: followed only where no one else could have put it.
            let here = cur.stat()?;
            let link = cur.stat_at(&name)?;
            let trusted = !others_can_write(&here)
                || (here.st_mode & 0o1000 != 0
                    && (here.st_uid == 0 || here.st_uid == me())
                    && (link.st_uid == 0 || link.st_uid == me()));
            if !trusted {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{} is a symlink in {}, which other users can write to; refusing to follow it",
                        cur.join(&name).display(),
                        cur.path.display()
                    ),
                ));
            }
            links += 1;
            if links > MAX_LINKS {
                return Err(io::Error::from_raw_os_error(libc::ELOOP));
            }
            let target = rustix::fs::readlinkat(&cur.fd, name.as_os_str(), Vec::new())?;
            let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
            if target.is_absolute() {
                stack.truncate(1);
            }
            push_components(&mut todo, &target);
        }
        let mut d = stack.pop().expect("root stays");
        d.path = abs;
        Ok(d)
    }

    /// Opens the subdirectory `name`, never through a symlink.
    pub fn open_dir(&self, name: impl AsRef<OsStr>) -> io::Result<Dir> {
        let name = single(name.as_ref())?;
        let fd = rustix::fs::openat(&self.fd, name, DIR_FLAGS, Mode::empty())?;
        Ok(Dir {
            fd,
            path: self.path.join(name),
        })
    }

    /// Opens the directory at relative path `rel` below this one, component
    /// by component, never through a symlink.
    pub fn open_rel(&self, rel: &str) -> io::Result<Dir> {
        let mut d = self.try_clone()?;
        for c in rel.split('/').filter(|c| !c.is_empty() && *c != ".") {
            d = d.open_dir(c)?;
        }
        Ok(d)
    }

    pub fn mkdir(&self, name: impl AsRef<OsStr>, m: u32) -> io::Result<()> {
        rustix::fs::mkdirat(&self.fd, single(name.as_ref())?, mode(m))?;
        Ok(())
    }

    /// Creates a new file `name` (never through a symlink, never an existing
    /// one), open for writing.
    pub fn create_file(&self, name: impl AsRef<OsStr>, m: u32) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            single(name.as_ref())?,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            mode(m),
        )?;
        Ok(File::from(fd))
    }

    /// Opens the regular file `name` for reading, never through a symlink.
    pub fn open_file(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            single(name.as_ref())?,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(File::from(fd))
    }

    /// This directory's own status.
    pub fn stat(&self) -> io::Result<Stat> {
        Ok(rustix::fs::fstat(&self.fd)?)
    }

    /// The status of `name`, not following a symlink.
    pub fn stat_at(&self, name: impl AsRef<OsStr>) -> io::Result<Stat> {
        Ok(rustix::fs::statat(
            &self.fd,
            single(name.as_ref())?,
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    pub fn exists(&self, name: impl AsRef<OsStr>) -> bool {
        self.stat_at(name).is_ok()
    }

    pub fn is_dir_at(&self, name: impl AsRef<OsStr>) -> bool {
        self.stat_at(name).map(|s| is_dir(&s)).unwrap_or(false)
    }

    pub fn symlink(&self, target: impl AsRef<OsStr>, name: impl AsRef<OsStr>) -> io::Result<()> {
        rustix::fs::symlinkat(target.as_ref(), &self.fd, single(name.as_ref())?)?;
        Ok(())
    }

    /// Hard-links `from/from_name` as `name` here (a symlink is linked, not
    /// followed).
    pub fn hard_link(
        &self,
        from: &Dir,
        from_name: impl AsRef<OsStr>,
        name: impl AsRef<OsStr>,
    ) -> io::Result<()> {
        rustix::fs::linkat(
            &from.fd,
            single(from_name.as_ref())?,
            &self.fd,
            single(name.as_ref())?,
            AtFlags::empty(),
        )?;
        Ok(())
    }

    /// `renameat2(self/name, to/to_name, flags)`.
    pub fn rename(
        &self,
        name: impl AsRef<OsStr>,
        to: &Dir,
        to_name: impl AsRef<OsStr>,
        flags: RenameFlags,
    ) -> io::Result<()> {
        rustix::fs::renameat_with(
            &self.fd,
            single(name.as_ref())?,
            &to.fd,
            single(to_name.as_ref())?,
            flags,
        )?;
        Ok(())
    }

    pub fn unlink(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        rustix::fs::unlinkat(&self.fd, single(name.as_ref())?, AtFlags::empty())?;
        Ok(())
    }

    /// Removes `name` and, if it is a directory, everything in it, without
    /// ever following a symlink.
    pub fn remove_all(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        let name = single(name.as_ref())?;
        let st = self.stat_at(name)?;
        if !is_dir(&st) {
            return self.unlink(name);
        }
        let d = self.open_dir(name)?;
        for e in d.entries()? {
            d.remove_all(&e)?;
        }
        rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR)?;
        Ok(())
    }

    /// The names in this directory, without `.` and `..`.
    pub fn entries(&self) -> io::Result<Vec<OsString>> {
        let mut d = rustix::fs::Dir::read_from(&self.fd)?;
        let mut v = Vec::new();
        while let Some(e) = d.read() {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                v.push(OsStr::from_bytes(n).to_os_string());
            }
        }
        Ok(v)
    }

    pub fn chmod(&self, m: u32) -> io::Result<()> {
        rustix::fs::fchmod(&self.fd, mode(m))?;
        Ok(())
    }

    pub fn chown(&self, uid: u32, gid: u32) -> io::Result<()> {
        set_owner(&self.fd, uid, gid)
    }

    pub fn set_mtime(&self, sec: i64, nsec: u32) -> io::Result<()> {
        set_mtime(&self.fd, sec, nsec)
    }

    /// Sets the owner of `name` itself (a symlink is not followed).
    pub fn lchown_at(&self, name: impl AsRef<OsStr>, uid: u32, gid: u32) -> io::Result<()> {
        rustix::fs::chownat(
            &self.fd,
            single(name.as_ref())?,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }

    /// Sets the mtime of `name` itself (a symlink is not followed).
    pub fn set_mtime_at(&self, name: impl AsRef<OsStr>, sec: i64, nsec: u32) -> io::Result<()> {
        rustix::fs::utimensat(
            &self.fd,
            single(name.as_ref())?,
            &times(sec, nsec),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }

    /// Creates a private (0700) staging directory here and opens it; the
    /// handle is checked to be the directory we made, owned by us.
    pub fn make_staging(&self, prefix: &str) -> io::Result<(String, Dir)> {
        loop {
            let name = format!("{prefix}{}", crate::crypto::random_id(6));
            match self.mkdir(&name, 0o700) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                other => other?,
            }
            // Another process may swap what we just made for a symlink, a
            // file or its own directory, or move it away, before we open it.
            let d = self.open_dir(&name).map_err(|e| match e.raw_os_error() {
                Some(libc::ENOTDIR) | Some(libc::ELOOP) | Some(libc::ENOENT) => {
                    Replaced::error(self.path.join(&name))
                }
                _ => e,
            })?;
            let st = d.stat()?;
            if st.st_uid != me() || st.st_mode & 0o077 != 0 {
                return Err(Replaced::error(d.path.clone()));
            }
            return Ok((name, d));
        }
    }
}

/// A directory coffer had just created was replaced by another process
/// before coffer could open it (an attack, or a tool tidying up).
#[derive(Debug, thiserror::Error)]
#[error("{} was replaced by another process while it was being created", .0.display())]
pub struct Replaced(pub PathBuf);

impl Replaced {
    fn error(path: PathBuf) -> io::Error {
        io::Error::other(Replaced(path))
    }

    /// The path, when `e` says a new directory was replaced.
    pub fn of(e: &io::Error) -> Option<&Path> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<Replaced>())
            .map(|r| r.0.as_path())
    }
}

fn push_components(todo: &mut Vec<OsString>, p: &Path) {
    let mut v: Vec<OsString> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => v.push(n.to_os_string()),
            Component::ParentDir => v.push("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    // `todo` is a stack: the first component last.
    todo.extend(v.into_iter().rev());
}

fn times(sec: i64, nsec: u32) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: sec,
            tv_nsec: nsec.into(),
        },
    }
}

/// `fchown` of an open file or directory.
pub fn set_owner(fd: impl AsFd, uid: u32, gid: u32) -> io::Result<()> {
    rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )?;
    Ok(())
}

/// `futimens` of an open file or directory, mtime only.
pub fn set_mtime(fd: impl AsFd, sec: i64, nsec: u32) -> io::Result<()> {
    rustix::fs::futimens(fd, &times(sec, nsec))?;
    Ok(())
}

/// The mode to give a restored file or directory that records `mode`,
/// `uid` and `gid`, now that it is owned by `st`: the setuid bit only if it
/// has the recorded owner, the setgid bit only if it has the recorded group
/// (a file whose owner could not be set must not become setuid as us).
pub fn safe_mode(recorded: u32, uid: u32, gid: u32, st: &Stat) -> u32 {
    let mut m = recorded & 0o7777;
    if st.st_uid != uid {
        m &= !0o4000;
    }
    if st.st_gid != gid {
        m &= !0o2000;
    }
    m
}

/// Sets owner (as root), then mode (with [`safe_mode`]), then mtime of an
/// open file or directory, in that order: a mode set before the owner would
/// leave a moment with a setuid file owned by us.
pub fn set_metadata(
    fd: impl AsFd,
    as_root: bool,
    uid: u32,
    gid: u32,
    recorded_mode: u32,
    mtime: (i64, u32),
) -> io::Result<()> {
    let fd = fd.as_fd();
    if as_root {
        // A failure (a uid the filesystem cannot store) leaves us as owner;
        // safe_mode then drops the setuid/setgid bits.
        let _ = set_owner(fd, uid, gid);
    }
    let st = rustix::fs::fstat(fd)?;
    rustix::fs::fchmod(fd, mode(safe_mode(recorded_mode, uid, gid, &st)))?;
    let _ = set_mtime(fd, mtime.0, mtime.1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(uid: u32, gid: u32, m: u32) -> Stat {
        let mut s = rustix::fs::stat("/").expect("stat /");
        s.st_uid = uid;
        s.st_gid = gid;
        s.st_mode = libc::S_IFDIR | m;
        s
    }

    #[test]
    fn staging_parents_other_users_can_write_are_refused() {
        let me = me();
        assert!(safe_staging_parent(&st(me, 0, 0o755)));
        assert!(safe_staging_parent(&st(0, 0, 0o775)));
        assert!(safe_staging_parent(&st(0, 0, 0o1777)));
        assert!(!safe_staging_parent(&st(0, 0, 0o777)));
        assert!(!safe_staging_parent(&st(0, 100, 0o775)));
        if me != 65534 {
            // Owned by another user who alone can write: that user can
            // replace the destination anyway (see unsafe_staging_parent).
            assert!(safe_staging_parent(&st(65534, 65534, 0o755)));
            assert!(!safe_staging_parent(&st(65534, 65534, 0o775)));
            assert!(!safe_staging_parent(&st(65534, 0, 0o1777)));
            assert!(safe_staging_parent(&st(65534, 0, 0o555)));
        }
    }

    #[test]
    fn setuid_and_setgid_only_with_the_recorded_owner() {
        assert_eq!(safe_mode(0o6755, 5, 6, &st(5, 6, 0)), 0o6755);
        assert_eq!(safe_mode(0o6755, 5, 6, &st(0, 6, 0)), 0o2755);
        assert_eq!(safe_mode(0o6755, 5, 6, &st(5, 0, 0)), 0o4755);
        assert_eq!(safe_mode(0o6755, 5, 6, &st(0, 0, 0)), 0o755);
    }

    #[test]
    fn open_path_refuses_a_symlink_in_a_directory_others_can_write() {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(t.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", t.path().join("link")).unwrap();
        // Only we can write: followed.
        let d = Dir::open_path(&t.path().join("link"), None).expect("trusted link");
        assert!(d.stat().map(|s| is_dir(&s)).unwrap());
        // World-writable, not sticky: refused.
        let w = t.path().join("open");
        std::fs::create_dir(&w).unwrap();
        std::os::unix::fs::symlink(t.path().join("real"), w.join("link")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Dir::open_path(&w.join("link"), None).expect_err("untrusted link");
        assert!(e.to_string().contains("refusing to follow"), "{e}");
    }
}
