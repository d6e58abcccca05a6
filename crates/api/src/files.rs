//! Reading the files a spec names (components, BPF objects, spec files)
//! without trusting them: only regular files, opened without blocking,
//! their size checked against a cap before anything is read and their
//! header before the rest is.
//!
//! A spec may name any path the host can open: `/dev/zero` or a FIFO would
//! otherwise make the host read forever (or block a load slot for good), and
//! a large sparse file would be read whole before its first bytes are looked
//! at.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Largest component file read by default (componentize-py components are
/// ~35 MB).
pub const DEFAULT_MAX_COMPONENT_BYTES: u64 = 128 << 20;
/// Largest BPF object file read by default (objects with BTF are a few MB).
pub const DEFAULT_MAX_BYTECODE_BYTES: u64 = 64 << 20;
/// Largest spec file `conductor run` reads (a spec is a few KiB).
pub const MAX_SPEC_FILE_BYTES: u64 = 4 << 20;
/// How long reading one file may take by default: a local file of the
/// largest size is read in well under a second; a file on a stalled
/// network or FUSE mount would otherwise hold a load slot forever.
pub const DEFAULT_READ_DEADLINE: Duration = Duration::from_secs(30);

/// The read deadline in milliseconds (process-wide: set once at start-up
/// from `--file-read-timeout-secs`).
static READ_DEADLINE_MS: AtomicU64 = AtomicU64::new(DEFAULT_READ_DEADLINE.as_millis() as u64);

/// Set how long a read of a user-named file may take.
pub fn set_read_deadline(deadline: Duration) {
    READ_DEADLINE_MS.store(
        u64::try_from(deadline.as_millis())
            .unwrap_or(u64::MAX)
            .max(1),
        Ordering::Relaxed,
    );
}

/// How long a read of a user-named file may take.
pub fn read_deadline() -> Duration {
    Duration::from_millis(READ_DEADLINE_MS.load(Ordering::Relaxed))
}

/// The file-size caps a host enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileCaps {
    /// `--max-component-bytes`.
    pub component_bytes: u64,
    /// `--max-bytecode-bytes`.
    pub bytecode_bytes: u64,
}

impl Default for FileCaps {
    fn default() -> Self {
        Self {
            component_bytes: DEFAULT_MAX_COMPONENT_BYTES,
            bytecode_bytes: DEFAULT_MAX_BYTECODE_BYTES,
        }
    }
}

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("it is a {0}, not a regular file; give the path of a file")]
    NotRegular(&'static str),
    #[error("it is {size} bytes, more than the limit of {max} bytes ({setting})")]
    TooLarge {
        size: u64,
        max: u64,
        /// How the limit is set, e.g. `--max-component-bytes`.
        setting: &'static str,
    },
    /// The first bytes are not what the caller expects.
    #[error("it does not start with the expected header")]
    BadHeader,
    #[error(
        "reading it took longer than {} s (is it on a stalled network or FUSE mount?); \
         copy it to a local disk, or raise --file-read-timeout-secs",
        .0.as_secs_f64()
    )]
    Deadline(Duration),
}

/// Run `read` on its own thread and give up waiting after the read
/// deadline: a read blocked in the kernel cannot be interrupted, but the
/// caller (and the load slot it holds) is freed; the thread ends when the
/// read does. `read` gets the instant by which it must be done, to stop
/// early when the file is merely slow.
fn with_deadline<T: Send + 'static>(
    read: impl FnOnce(Instant) -> Result<T, FileError> + Send + 'static,
) -> Result<T, FileError> {
    let deadline = read_deadline();
    let until = Instant::now() + deadline;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let reader = std::thread::Builder::new()
        .name("file-read".into())
        .spawn(move || {
            let _ = tx.send(read(until));
        })?;
    match rx.recv_timeout(deadline) {
        Ok(result) => {
            // Done: wait for the thread to end, so that a caller about to
            // drop capabilities (per thread) finds itself alone.
            let _ = reader.join();
            result
        }
        Err(_) => Err(FileError::Deadline(deadline)),
    }
}

/// `read_to_end` in chunks, giving up at `until`.
fn read_until(file: &mut impl Read, bytes: &mut Vec<u8>, until: Instant) -> Result<(), FileError> {
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        if Instant::now() > until {
            return Err(FileError::Deadline(read_deadline()));
        }
        match file.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Open `path` without blocking (a FIFO opens at once) and check that it is
/// a regular file of at most `max` bytes; returns it with its size.
pub fn open_regular(
    path: &Path,
    max: u64,
    setting: &'static str,
) -> Result<(File, u64), FileError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_dir() {
            "directory"
        } else if ft.is_fifo() {
            "FIFO"
        } else if ft.is_char_device() {
            "character device"
        } else if ft.is_block_device() {
            "block device"
        } else if ft.is_socket() {
            "socket"
        } else {
            "special file"
        };
        return Err(FileError::NotRegular(kind));
    }
    if meta.len() > max {
        return Err(FileError::TooLarge {
            size: meta.len(),
            max,
            setting,
        });
    }
    Ok((file, meta.len()))
}

/// Read a regular file of at most `max` bytes whose first bytes must pass
/// `header_ok` (checked before the rest is read), within the read deadline.
pub fn read_checked(
    path: &Path,
    max: u64,
    setting: &'static str,
    header_len: usize,
    header_ok: impl Fn(&[u8]) -> bool + Send + 'static,
) -> Result<Vec<u8>, FileError> {
    let path = path.to_owned();
    with_deadline(move |until| {
        let (file, size) = open_regular(&path, max, setting)?;
        let mut file = file.take(max);
        let mut header = vec![0; header_len];
        let mut got = 0;
        while got < header_len {
            match file.read(&mut header[got..])? {
                0 => break,
                n => got += n,
            }
        }
        header.truncate(got);
        if !header_ok(&header) {
            return Err(FileError::BadHeader);
        }
        // The size may have grown since the check: `take` still bounds it.
        let mut bytes = header;
        bytes.reserve(usize::try_from(size).unwrap_or(0).saturating_sub(got));
        read_until(&mut file, &mut bytes, until)?;
        Ok(bytes)
    })
}

/// A regular file of at most `max` bytes as text, within the read deadline.
pub fn read_text(path: &Path, max: u64, setting: &'static str) -> Result<String, FileError> {
    let path = path.to_owned();
    with_deadline(move |until| {
        let (file, _) = open_regular(&path, max, setting)?;
        let mut bytes = Vec::new();
        read_until(&mut file.take(max), &mut bytes, until)?;
        String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e).into())
    })
}

/// sha256 of a regular file of at most `max` bytes, streamed, within the
/// read deadline.
pub fn sha256_hex(path: &Path, max: u64, setting: &'static str) -> Result<String, FileError> {
    use sha2::Digest;
    let path = path.to_owned();
    with_deadline(move |until| {
        let (file, _) = open_regular(&path, max, setting)?;
        let mut file = file.take(max);
        let mut hasher = sha2::Sha256::new();
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            if Instant::now() > until {
                return Err(FileError::Deadline(read_deadline()));
            }
            match file.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => hasher.update(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(hex::encode(hasher.finalize()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_cap_with_the_header_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok");
        std::fs::write(&ok, b"\0asm rest").unwrap();
        let read = |p: &Path, max| read_checked(p, max, "--cap", 4, |h| h == b"\0asm");
        assert_eq!(read(&ok, 100).unwrap(), b"\0asm rest");
        assert!(matches!(
            read(&ok, 4),
            Err(FileError::TooLarge {
                size: 9,
                max: 4,
                ..
            })
        ));
        std::fs::write(&ok, b"ELF").unwrap();
        assert!(matches!(read(&ok, 100), Err(FileError::BadHeader)));
        assert!(matches!(
            read(Path::new("/dev/zero"), 100),
            Err(FileError::NotRegular("character device"))
        ));
        assert!(matches!(
            read(dir.path(), 100),
            Err(FileError::NotRegular("directory"))
        ));
        let fifo = dir.path().join("fifo");
        nix_mkfifo(&fifo);
        // Opening does not block for want of a writer.
        assert!(matches!(
            read(&fifo, 100),
            Err(FileError::NotRegular("FIFO"))
        ));
        assert!(matches!(
            sha256_hex(Path::new("/dev/zero"), 100, "--cap"),
            Err(FileError::NotRegular(_))
        ));
        std::fs::write(&ok, b"abc").unwrap();
        assert_eq!(
            sha256_hex(&ok, 100, "--cap").unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// A read that blocks (here a FIFO read with no writer, standing in for
    /// a stalled mount) is given up at the deadline, with an error that says
    /// what to do; the thread left behind ends when the read does.
    #[test]
    fn a_blocked_read_is_given_up_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix_mkfifo(&fifo);
        set_read_deadline(Duration::from_millis(200));
        let blocked = fifo.clone();
        let err = with_deadline(move |_| Ok(std::fs::read(&blocked)?)).unwrap_err();
        set_read_deadline(DEFAULT_READ_DEADLINE);
        assert!(matches!(err, FileError::Deadline(_)), "{err}");
        assert!(
            err.to_string().contains("--file-read-timeout-secs"),
            "{err}"
        );
        // Unblock the abandoned reader (open for writing, then close).
        drop(std::fs::OpenOptions::new().write(true).open(&fifo).unwrap());
    }

    /// A file that is read but slowly stops at the deadline too.
    #[test]
    fn a_slow_read_stops_at_the_deadline() {
        struct Slow;
        impl Read for Slow {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                std::thread::sleep(Duration::from_millis(5));
                buf[0] = 0;
                Ok(1)
            }
        }
        let mut bytes = Vec::new();
        let until = Instant::now() + Duration::from_millis(50);
        let err = read_until(&mut Slow, &mut bytes, until).unwrap_err();
        assert!(matches!(err, FileError::Deadline(_)), "{err}");
        assert!(!bytes.is_empty());
    }

    fn nix_mkfifo(path: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }
}
