//! The ServiceAccount token: read from its file, and read again when the file changes.
//!
//! kubelet updates a projected volume by writing a new timestamped directory and swapping the `..data`
//! symlink, so the token path then resolves to a new file (new inode). Before each request the file is
//! `stat`ed (a syscall, no read): a different inode, size or mtime makes the next request read it again.
//! As a fallback for rewrites that keep all three (same size, same mtime tick), the file is also read
//! again once `reload_interval` has passed since the last read.
//!
//! A failed re-read keeps the last good token, as client-go and kube do: a file that vanishes after
//! start-up must not break a running client. The token never appears in `Debug` output or errors.

use std::{
    fmt,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use http::HeaderValue;
use parking_lot::RwLock;

use crate::Error;

/// What identifies one version of the token file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    dev: u64,
    #[cfg(unix)]
    ino: u64,
}

impl FileStamp {
    /// Follows symlinks, so a swapped `..data` link shows up as a new inode.
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt as _;
        Some(Self {
            modified: meta.modified().ok(),
            len: meta.len(),
            #[cfg(unix)]
            dev: meta.dev(),
            #[cfg(unix)]
            ino: meta.ino(),
        })
    }
}

/// A token as read from its file: the ready `Authorization` value (marked sensitive) and the file version.
#[derive(Clone)]
pub(crate) struct LoadedToken {
    header: HeaderValue,
    stamp: Option<FileStamp>,
}

impl fmt::Debug for LoadedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedToken")
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl LoadedToken {
    /// Reads and checks the token file. Errors name the path, never the content.
    pub(crate) fn read(path: &Path) -> Result<Self, Error> {
        // The stamp is taken before the read: a change racing with the read then differs from the stamp
        // and triggers one more read, instead of being missed.
        let stamp = FileStamp::of(path);
        let bytes = std::fs::read(path).map_err(|source| Error::ReadToken {
            path: path.to_owned(),
            source,
        })?;
        // client-go trims the file content too; a trailing newline would otherwise end up in the header.
        let token = bytes.trim_ascii();
        if token.is_empty() {
            return Err(Error::InvalidToken {
                path: path.to_owned(),
                problem: "is empty",
            });
        }
        let mut value = Vec::with_capacity("Bearer ".len() + token.len());
        value.extend_from_slice(b"Bearer ");
        value.extend_from_slice(token);
        let mut header = HeaderValue::from_bytes(&value).map_err(|_| Error::InvalidToken {
            path: path.to_owned(),
            problem: "holds bytes that are not allowed in an HTTP header",
        })?;
        header.set_sensitive(true);
        Ok(Self { header, stamp })
    }
}

struct State {
    token: LoadedToken,
    read_at: Instant,
}

/// The token file of a client, shared by all its requests.
pub(crate) struct TokenFile {
    path: PathBuf,
    reload_interval: Duration,
    state: RwLock<State>,
}

impl fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.path)
            .field("reload_interval", &self.reload_interval)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl TokenFile {
    pub(crate) fn new(path: PathBuf, token: LoadedToken, reload_interval: Duration) -> Self {
        Self {
            path,
            reload_interval,
            state: RwLock::new(State {
                token,
                read_at: Instant::now(),
            }),
        }
    }

    /// The `Authorization` header value for the next request.
    pub(crate) fn header(&self) -> HeaderValue {
        let stamp = FileStamp::of(&self.path);
        let fresh = |state: &State| {
            // A file that cannot be stat'ed cannot be read either: keep the last token until it is back.
            stamp.is_none() || (state.token.stamp == stamp && state.read_at.elapsed() < self.reload_interval)
        };
        {
            let state = self.state.read();
            if fresh(&state) {
                return state.token.header.clone();
            }
        }
        let mut state = self.state.write();
        if !fresh(&state) {
            match LoadedToken::read(&self.path) {
                Ok(token) => state.token = token,
                // The last good token stays. Recording this version of the file means it is not read
                // again per request; its next change, or the next interval, tries again.
                Err(_) => state.token.stamp = stamp,
            }
            state.read_at = Instant::now();
        }
        state.token.header.clone()
    }
}
