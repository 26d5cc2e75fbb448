//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while building, running, saving or loading a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    /// A safetensors file could not be written or parsed.
    #[error("safetensors error: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `build_model` was asked for a name it does not know.
    #[error("unknown model `{name}` (known: {known})")]
    UnknownModel {
        /// The requested name.
        name: String,
        /// The known names, comma separated.
        known: String,
    },
    /// An ONNX file that cannot be read or is not the network expected.
    #[error("{0}")]
    Onnx(String),
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A tensor has the wrong shape for a layer.
    #[error("shape error: {0}")]
    Shape(String),
    /// A checkpoint lacks a variable the model needs.
    #[error("{path}: missing tensor `{name}`")]
    MissingTensor {
        /// The checkpoint.
        path: PathBuf,
        /// The variable name.
        name: String,
    },
    /// A weights file does not match the checksum written beside it (`FILE.sha256`).
    #[error("{}: does not match its checksum in {}.sha256 (the file is damaged or was changed after it was written)", .path.display(), .path.display())]
    Checksum {
        /// The weights file.
        path: PathBuf,
    },
    /// A checkpoint tensor holds a NaN or an infinity (a diverged run or a damaged file).
    #[error("{path}: tensor `{name}` holds {value} (a diverged run or a damaged file)")]
    NonFinite {
        /// The checkpoint.
        path: PathBuf,
        /// The variable name.
        name: String,
        /// The first non-finite value.
        value: f32,
    },
    /// A checkpoint tensor has a different shape from the model's variable.
    #[error("{path}: tensor `{name}` has shape {found:?}, the model expects {expected:?}")]
    TensorShape {
        /// The checkpoint.
        path: PathBuf,
        /// The variable name.
        name: String,
        /// The model's shape.
        expected: Vec<usize>,
        /// The checkpoint's shape.
        found: Vec<usize>,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl From<kp_fs::Error> for Error {
    fn from(e: kp_fs::Error) -> Self {
        Error::Io {
            path: e.path,
            source: e.source,
        }
    }
}
