//! Every `unsafe` and every raw OS call of the core on files and maps: file
//! locks, preallocation, memory maps, msync, fsync and no-replace renames.
//! (The only other `unsafe` is the Python bindings' use of the interpreter's
//! C API, in `py.rs`.)
//!
//! A memory map of a file is only sound while nobody shrinks the file under
//! it: touching a page past the end raises SIGBUS, which would kill the
//! interpreter. Two defences, both here:
//! - files we write carry an exclusive advisory lock (`flock`), so
//!   cooperating processes (ours) never open them for writing twice;
//! - every public operation first checks with `fstat` that the file is
//!   still at least as long as the map ([`FileMap::check_len`]), so a file
//!   cut short by another process between two calls gives an error.
//!
//! Files are preallocated with `posix_fallocate`, so a full disk fails at
//! create time, never as a fault inside a write to the map.
//!
//! A map belongs to the process that made it. A child made by `fork()`
//! (multiprocessing's default start method on Linux, pre-fork servers)
//! shares its parent's maps and descriptors but not its in-memory locks or
//! its threads: its writes would race the parent's unguarded, and its
//! descriptors would keep the parent's file locks held after the parent let
//! go. So every operation refuses in a child ([`FileMap::check_len`]), and
//! a `pthread_atfork` handler lets go of the child's share of the locks.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

use memmap2::{Mmap, MmapMut, MmapOptions};

use crate::error::{Error, Result};

/// This process's id, kept current across `fork()` by the child handler: a
/// load where `getpid` would be a system call on every put. 0: not read yet.
static PROCESS_ID: AtomicU32 = AtomicU32::new(0);

/// This process's locked files (its [`FileMap`]s): descriptor, map address
/// and length, for the child handler.
static LOCKED_FILES: parking_lot::Mutex<Vec<(RawFd, usize, usize)>> =
    parking_lot::const_mutex(Vec::new());

/// The id of this process.
#[inline]
pub fn process_id() -> u32 {
    match PROCESS_ID.load(Ordering::Relaxed) {
        0 => first_process_id(),
        pid => pid,
    }
}

#[cold]
fn first_process_id() -> u32 {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        // SAFETY: registers a plain function with no arguments, run by
        // fork() in the child; it only makes async-signal-safe calls.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    PROCESS_ID.store(pid, Ordering::Relaxed);
    pid
}

/// In a child just forked: its own id, and its share of the parent's file
/// locks let go. An `flock` stays while anything refers to the open file:
/// the child's copy of the descriptor and its copy of the map both do, so a
/// long-lived child kept the parent's file locked after the parent closed
/// it (a restarted store was refused while the child lived). So the map is
/// replaced by empty anonymous memory of the same size, and the descriptor
/// by `/dev/null`: both under the same address and number, which the
/// child's `FileMap` still owns and gives back once (the child can no
/// longer read the parent's file through them, and is refused anyway).
/// A thread of the parent's in the middle of (un)registering a file at the
/// fork leaves the list locked here: the child then keeps its share.
extern "C" fn after_fork_in_child() {
    // SAFETY: getpid has no preconditions.
    PROCESS_ID.store(unsafe { libc::getpid() } as u32, Ordering::Relaxed);
    let Some(files) = LOCKED_FILES.try_lock() else {
        return;
    };
    // SAFETY: the addresses, lengths and descriptors are those of this
    // process's live FileMaps (registered while they live), which keep
    // owning them; mmap with MAP_FIXED replaces exactly that range; open,
    // dup3 and close take a NUL-terminated path and plain descriptors.
    unsafe {
        for &(_, addr, len) in files.iter() {
            libc::mmap(
                addr as *mut libc::c_void,
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            );
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null >= 0 {
            for &(fd, _, _) in files.iter() {
                libc::dup3(null, fd, libc::O_CLOEXEC);
            }
            libc::close(null);
        }
    }
}

/// A locked file's entry in `LOCKED_FILES`, for as long as its [`FileMap`]
/// lives (dropped before the map and the descriptor are).
struct LockedFile {
    entry: (RawFd, usize, usize),
    owner: u32,
}

impl LockedFile {
    fn register(file: &File, map: &MmapMut) -> Self {
        let entry = (file.as_raw_fd(), map.as_ptr() as usize, map.len());
        let owner = process_id(); // first: registers the fork handler
        LOCKED_FILES.lock().push(entry);
        Self { entry, owner }
    }
}

impl Drop for LockedFile {
    fn drop(&mut self) {
        // In a forked child the list may be locked for good (see
        // after_fork_in_child): never wait for it there.
        let files = if self.owner == process_id() {
            Some(LOCKED_FILES.lock())
        } else {
            LOCKED_FILES.try_lock()
        };
        if let Some(mut files) = files {
            if let Some(at) = files.iter().position(|&e| e == self.entry) {
                files.swap_remove(at);
            }
        }
    }
}

/// Takes an exclusive, non-blocking advisory lock on `file`.
fn lock_exclusive(file: &File, path: &Path) -> Result<()> {
    // SAFETY: flock takes a valid open descriptor and has no memory effects.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.kind() == io::ErrorKind::WouldBlock {
        Err(Error::Locked {
            path: path.to_path_buf(),
        })
    } else {
        Err(Error::io(path, err))
    }
}

/// Allocates disk blocks for `0..len` so later writes through a map cannot
/// fail for lack of space.
fn preallocate(file: &File, path: &Path, len: u64) -> Result<()> {
    let len = libc::off_t::try_from(len)
        .map_err(|_| Error::invalid("capacity", "file would be too large"))?;
    // SAFETY: posix_fallocate takes a valid descriptor and plain integers.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    match rc {
        0 => Ok(()),
        // Some file systems (tmpfs on old kernels, some FUSE) lack fallocate:
        // fall back to setting the length; the map is then sparse.
        libc::EOPNOTSUPP | libc::EINVAL => file.set_len(len as u64).map_err(|e| Error::io(path, e)),
        errno => Err(Error::io(path, io::Error::from_raw_os_error(errno))),
    }
}

/// fsyncs the directory holding `path`, so a create or rename in it survives
/// power loss.
pub fn sync_parent_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let handle = File::open(dir).map_err(|e| Error::io(dir, e))?;
    handle.sync_all().map_err(|e| Error::io(dir, e))
}

/// A name for a temporary file beside `dest`: `.NAME.PID.NANOS.SUFFIX`, so
/// that recovery can find what a crash left by its suffix.
pub fn temp_path(dest: &Path, suffix: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.{}.{nanos}.{suffix}", std::process::id()))
}

/// Renames `from` to `to`, failing with `AlreadyExists` if `to` exists.
pub fn rename_no_replace(from: &Path, to: &Path) -> Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c_from = CString::new(from.as_os_str().as_bytes())
        .map_err(|_| Error::invalid("path", "path contains a NUL byte"))?;
    let c_to = CString::new(to.as_os_str().as_bytes())
        .map_err(|_| Error::invalid("dest_path", "path contains a NUL byte"))?;
    // SAFETY: both pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_from.as_ptr(),
            libc::AT_FDCWD,
            c_to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EINVAL) || err.raw_os_error() == Some(libc::ENOSYS) {
        // File systems without RENAME_NOREPLACE: link (fails if `to` exists), then unlink.
        std::fs::hard_link(from, to).map_err(|e| Error::io(to, e))?;
        return std::fs::remove_file(from).map_err(|e| Error::io(from, e));
    }
    Err(Error::io(to, err))
}

/// The length of `file`, or `InvalidArgument` naming `path` if it is not a
/// regular file (a FIFO, device or directory cannot hold an index).
fn require_regular(file: &File, path: &Path) -> Result<u64> {
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let ft = meta.file_type();
        let kind = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_dir() {
            "a directory"
        } else if ft.is_char_device() || ft.is_block_device() {
            "a device"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "a special file"
        };
        return Err(Error::invalid(
            "path",
            format!("{} is {kind}, not a regular file", path.display()),
        ));
    }
    Ok(meta.len())
}

/// A writable shared map of a whole locked file.
pub struct FileMap {
    // Dropped first: out of the list before the map and the descriptor go.
    locked: LockedFile,
    path: PathBuf,
    file: File,
    map: MmapMut,
}

impl FileMap {
    /// Creates `path` (which must not exist), preallocates `len` bytes, locks
    /// and maps it.
    pub fn create(path: &Path, len: u64) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let made = (|| {
            lock_exclusive(&file, path)?;
            preallocate(&file, path, len)?;
            Self::map(path, file, len)
        })();
        if made.is_err() {
            // Leave nothing half-made behind.
            let _ = std::fs::remove_file(path);
        }
        made
    }

    /// Opens, locks and maps an existing file. `validate_len` sees the file's
    /// length and returns the length to map, or an error, before anything is
    /// mapped.
    pub fn open(path: &Path, validate_len: impl FnOnce(u64, &File) -> Result<u64>) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        require_regular(&file, path)?;
        lock_exclusive(&file, path)?;
        let actual = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let len = validate_len(actual, &file)?;
        Self::map(path, file, len)
    }

    fn map(path: &Path, file: File, len: u64) -> Result<Self> {
        let len_usize = usize::try_from(len)
            .map_err(|_| Error::invalid("capacity", "file too large to map"))?;
        // SAFETY: the file is at least `len` bytes (created so, or checked by
        // the caller), we hold its exclusive advisory lock, and every access
        // is preceded by `check_len`, which catches a file shrunk behind our
        // back before the map is touched.
        let map = unsafe { MmapOptions::new().len(len_usize).map_mut(&file) }
            .map_err(|e| Error::io(path, e))?;
        Ok(Self {
            locked: LockedFile::register(&file, &map),
            path: path.to_path_buf(),
            file,
            map,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fails unless this process made the map (see the module's doc on
    /// `fork()`) and the file is still at least as long as the map.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.locked.owner != process_id() {
            return Err(Error::Forked {
                path: self.path.clone(),
                owner: self.locked.owner,
            });
        }
        check_file_len(&self.file, &self.path, self.map.len())
    }

    #[inline]
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    #[inline]
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map
    }

    /// Pre-faults `offset..offset + len` for writing in one call
    /// (`MADV_POPULATE_WRITE`), instead of one page fault per page during a
    /// long run of writes. Best effort: kernels before 5.14 lack it, and
    /// then the writes simply fault as usual.
    pub fn populate_write(&self, offset: usize, len: usize) {
        if len > 0 {
            let _ = self
                .map
                .advise_range(memmap2::Advice::PopulateWrite, offset, len);
        }
    }

    /// Hints the CPU to bring the cache line at `offset` in for writing.
    #[inline]
    pub fn prefetch(&self, offset: usize) {
        prefetch(&self.map, offset);
    }

    /// msync(MS_SYNC) of `offset..offset+len`.
    pub fn sync_range(&self, offset: usize, len: usize) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.map
            .flush_range(offset, len)
            .map_err(|e| Error::io(&self.path, e))
    }

    /// The parts of `from..to` that may hold data, in order: what
    /// `SEEK_DATA`/`SEEK_HOLE` report (preallocated but never written
    /// extents are holes on ext4 and XFS, unless their pages are cached);
    /// the whole range where the file system cannot tell.
    pub fn data_regions(&self, from: usize, to: usize) -> Vec<(usize, usize)> {
        use std::os::fd::AsRawFd;
        let fd = self.file.as_raw_fd();
        let mut regions = Vec::new();
        let mut at = from;
        while at < to {
            // SAFETY: lseek takes a valid descriptor and plain integers.
            let data = unsafe { libc::lseek(fd, at as libc::off_t, libc::SEEK_DATA) };
            if data < 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::ENXIO) {
                    break; // no data at or after `at`
                }
                regions.push((at, to)); // not supported: read it all
                break;
            }
            let start = (data as usize).max(at);
            if start >= to {
                break;
            }
            // SAFETY: as above.
            let hole = unsafe { libc::lseek(fd, start as libc::off_t, libc::SEEK_HOLE) };
            let end = if hole < 0 {
                to
            } else {
                (hole as usize).min(to)
            };
            regions.push((start, end));
            at = end.max(start + 1);
        }
        regions
    }

    /// Renames the mapped file to `to`, which must not exist; the map and
    /// the lock stay (they belong to the file, not to its name).
    pub fn rename_no_replace(&mut self, to: &Path) -> Result<()> {
        rename_no_replace(&self.path, to)?;
        self.path = to.to_path_buf();
        Ok(())
    }

    /// fsync of the file (metadata included).
    pub fn sync_file(&self) -> Result<()> {
        self.file.sync_all().map_err(|e| Error::io(&self.path, e))
    }

    /// Drops the map and the lock, returning the open file.
    pub fn into_file(self) -> File {
        self.file
    }
}

/// A read-only map of a whole file that is never written (a sealed file).
pub struct ReadMap {
    path: PathBuf,
    file: File,
    map: Option<Mmap>,
}

impl ReadMap {
    pub fn open(path: &Path) -> Result<Self> {
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
        // writer (for ever, with the GIL released); it has no effect on the
        // regular file that `require_regular` then insists on.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let len = require_regular(&file, path)?;
        let len = usize::try_from(len)
            .map_err(|_| Error::corrupt(path.display(), "file too large to map"))?;
        let map = if len == 0 {
            None // mmap of zero bytes is an error; an empty file is just corrupt
        } else {
            // SAFETY: read-only map of a file of `len` bytes; every access is
            // preceded by `check_len`, which catches a file shrunk since.
            Some(
                unsafe { MmapOptions::new().len(len).map(&file) }
                    .map_err(|e| Error::io(path, e))?,
            )
        };
        Ok(Self {
            path: path.to_path_buf(),
            file,
            map,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    #[inline]
    pub fn check_len(&self) -> Result<()> {
        check_file_len(&self.file, &self.path, self.bytes().len())
    }

    #[inline]
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

#[inline]
fn check_file_len(file: &File, path: &Path, mapped: usize) -> Result<()> {
    let now = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if now < mapped as u64 {
        return Err(Error::corrupt(
            path.display(),
            format!("file was cut short to {now} bytes while open (expected {mapped})"),
        ));
    }
    Ok(())
}

/// SIGKILLs this process (crash tests only: see `faults.rs`).
pub fn kill_self() {
    // SAFETY: kill and getpid take plain integers and have no memory effects.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

/// Hints the CPU to bring the cache line holding `bytes[offset]` into cache
/// (nothing if `offset` is out of range).
#[inline]
pub fn prefetch(bytes: &[u8], offset: usize) {
    if let Some(byte) = bytes.get(offset) {
        prefetch_ptr(std::ptr::from_ref(byte));
    }
}

/// Hints the CPU to bring the cache line at `ptr` into cache. Never
/// dereferences `ptr`: any address, even a dangling one, is harmless.
#[inline]
pub fn prefetch_ptr(ptr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch never faults and reads nothing architecturally;
        // SSE is part of the x86_64 baseline.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr.cast::<i8>()) };
    }
}
