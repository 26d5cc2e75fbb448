//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while training or evaluating.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    /// A model could not be built, saved or loaded.
    #[error(transparent)]
    Model(#[from] kp_models::Error),
    /// The dataset could not be read.
    #[error(transparent)]
    Data(#[from] kp_data::Error),
    /// Augmentation failed or its configuration is invalid.
    #[error(transparent)]
    Augment(#[from] kp_augment::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file could not be parsed or written.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// A run folder is missing a file or holds inconsistent state.
    #[error("run folder {path}: {msg}")]
    Run {
        /// The run folder or file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// The loss became NaN or infinite.
    #[error("training diverged at step {step} (epoch {epoch}): loss = {loss}; the last good checkpoint was kept")]
    Diverged {
        /// Global step (1-based) at which the loss was not finite.
        step: usize,
        /// Epoch (1-based).
        epoch: usize,
        /// The offending loss value.
        loss: f32,
    },
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A data-parallel job could not start or lost a rank.
    #[error("data-parallel training: {0}")]
    Distributed(String),
    /// A figure could not be drawn.
    #[error(transparent)]
    Figure(#[from] kp_viz::Error),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<kp_fs::Error> for Error {
    fn from(e: kp_fs::Error) -> Self {
        Error::io(e.path, e.source)
    }
}
