//! Small filesystem helpers shared by the storage layers.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temp file in the same directory, fsync, rename,
/// then fsync of the directory so the rename itself is durable.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Fsyncs a directory so entries created, renamed or removed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Gives the open `file` a new name `to` (`linkat` of the descriptor, following the
/// `/proc/self/fd` link): the very inode held open, wherever its old name went. Fails when
/// the file has no name left (its last name was removed), across filesystems, or where the
/// filesystem has no hard links.
pub(crate) fn link_fd(file: &File, to: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let from = format!("/proc/self/fd/{}", file.as_raw_fd());
    rustix::fs::linkat(
        rustix::fs::CWD,
        from.as_str(),
        rustix::fs::CWD,
        to,
        rustix::fs::AtFlags::SYMLINK_FOLLOW,
    )
    .map_err(io::Error::from)
}

/// Why a hard link was refused, in words for a log line.
pub(crate) fn link_refusal(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::CrossesDevices => {
            "the snapshots directory is on another filesystem than the storage".into()
        }
        io::ErrorKind::NotFound => "the file was removed before it could be linked".into(),
        io::ErrorKind::PermissionDenied | io::ErrorKind::Unsupported => {
            format!("the filesystem does not allow hard links here ({e})")
        }
        _ => e.to_string(),
    }
}

/// Whether a file made in `from` can be hard-linked into `to` (both directories, created if
/// missing): `Err` says why not. Leaves nothing behind.
pub(crate) fn can_link_between(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(from)?;
    fs::create_dir_all(to)?;
    let probe = format!(".link-probe.{}.tmp", uuid::Uuid::new_v4().simple());
    let (a, b) = (from.join(&probe), to.join(&probe));
    let file = File::create(&a)?;
    let linked = link_fd(&file, &b);
    let _ = fs::remove_file(&a);
    let _ = fs::remove_file(&b);
    linked
}

/// Moves a directory tree: a rename when possible, else (across filesystems) a copy with
/// every file fsynced, then removal of the source.
pub(crate) fn move_dir(src: &Path, dst: &Path) -> io::Result<()> {
    match fs::rename(src, dst) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
            copy_tree(src, dst)?;
            fs::remove_dir_all(src)
        }
        Err(e) => Err(e),
    }
}

fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    fs::create_dir_all(dst)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let target = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
            File::open(&target)?.sync_all()?;
        }
    }
    sync_dir(dst)
}
