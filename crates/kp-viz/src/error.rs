//! Error type shared by every figure function of the crate.

use std::path::PathBuf;

/// Everything that can go wrong while building or saving a figure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input held nothing that can be drawn or computed (no images, no errors, ...).
    #[error("empty input: {0}")]
    EmptyInput(String),
    /// An input value or an option is out of its valid range (zero size, bad shape, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The chart library (plotters) failed while drawing.
    #[error("plotting failed: {0}")]
    Plot(String),
    /// An embedded font could not be loaded.
    #[error("font could not be loaded: {0}")]
    Font(String),
    /// Encoding or decoding an image failed.
    #[error("image error: {0}")]
    Image(#[from] image::ImageError),
    /// Reading or writing a file failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file that could not be read or written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Result alias with [`Error`] as the error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidInput(msg.into())
    }

    pub(crate) fn empty(msg: impl Into<String>) -> Self {
        Self::EmptyInput(msg.into())
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
