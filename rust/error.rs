//! The one error type of the core. `py.rs` maps it, once, to the Python
//! exceptions named in API.md.

use std::io;
use std::path::PathBuf;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error, with the file it concerned.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file or object failed a structural or checksum check.
    /// `name` is the path or object key, `what` says what failed and where.
    #[error("{name}: corrupt: {what}")]
    Corrupt { name: String, what: String },
    /// Another live writer holds the advisory lock on this file.
    #[error("{path}: locked by another writer")]
    Locked { path: PathBuf },
    /// A bad argument; `name` is the argument.
    #[error("{name}: {message}")]
    InvalidArgument { name: &'static str, message: String },
    /// The file was closed.
    #[error("{path}: file is closed")]
    Closed { path: PathBuf },
    /// The file was opened by process `owner`, which then forked this one:
    /// the parent's open files are not the child's to use.
    #[error(
        "{path}: opened by process {owner}, which forked this process; a forked child \
         cannot use its parent's open files (open its own after the fork)"
    )]
    Forked { path: PathBuf, owner: u32 },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(name: impl std::fmt::Display, what: impl Into<String>) -> Self {
        Error::Corrupt {
            name: name.to_string(),
            what: what.into(),
        }
    }

    pub(crate) fn invalid(name: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            name,
            message: message.into(),
        }
    }
}
