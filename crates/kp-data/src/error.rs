//! The crate's error type: every failure names the file and, where it can, the line or element.

use std::path::PathBuf;

/// Everything that can go wrong while reading, writing or checking landmark data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A line of a text annotation file (`.asf`, `.pts`) is malformed.
    #[error("{}:{line}: {message}", .path.display())]
    Parse {
        /// The annotation file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },

    /// An element of a dlib XML file is malformed or the XML itself is broken.
    #[error("{}:{line}: {element} (byte {position}): {message}", .path.display())]
    Xml {
        /// The XML file.
        path: PathBuf,
        /// 1-based line of the element.
        line: usize,
        /// Byte offset of the element (or of the syntax error) in the file.
        position: u64,
        /// Which element, e.g. `<image file='a.jpg'> <box #2> <part name='07'>`.
        element: String,
        /// What is wrong.
        message: String,
    },

    /// A face has the wrong number of landmarks.
    #[error("{}: expected {expected} points, found {found}", .path.display())]
    PointCount {
        /// The annotation file.
        path: PathBuf,
        /// The number the format or scheme requires.
        expected: usize,
        /// The number found.
        found: usize,
    },

    /// The image an annotation refers to does not exist.
    #[error("{}: image {} not found", .annotation.display(), .image.display())]
    MissingImage {
        /// The annotation file that names the image.
        annotation: PathBuf,
        /// The image path that was looked for (for `.pts`: the path without extension).
        image: PathBuf,
    },

    /// An image could not be opened, its header read or its pixels decoded.
    #[error("{}: cannot read image: {source}", .path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: image::ImageError,
    },

    /// A CSV annotation table could not be built, written or read.
    #[error("{}: {message}", .path.display())]
    Table {
        /// The CSV file (or `<memory>` for an in-memory table).
        path: PathBuf,
        /// What is wrong (with the row and column when known).
        message: String,
    },

    /// The path is not a dataset in any known format.
    #[error("{}: {message}", .path.display())]
    UnknownFormat {
        /// The path that was given.
        path: PathBuf,
        /// What was looked for.
        message: String,
    },

    /// A dataset lacks what an operation needs (e.g. an IMM split without person ids).
    #[error("dataset {dataset}: {message}")]
    Dataset {
        /// The dataset's name.
        dataset: String,
        /// What is missing.
        message: String,
    },

    /// An argument is out of range (e.g. a validation fraction of 1.5).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl From<kp_fs::Error> for Error {
    fn from(e: kp_fs::Error) -> Self {
        Error::io(e.path, e.source)
    }
}

impl Error {
    /// A short name of the cause, for counting (e.g. `bad annotation line`, `missing image`).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Io { .. } => "unreadable file",
            Error::Parse { .. } => "bad annotation line",
            Error::Xml { .. } => "bad XML element",
            Error::PointCount { .. } => "wrong point count",
            Error::MissingImage { .. } => "missing image",
            Error::Image { .. } => "unreadable image",
            Error::Table { .. } => "bad table row",
            Error::UnknownFormat { .. } => "unknown format",
            Error::Dataset { .. } => "dataset error",
            Error::InvalidArgument(_) => "invalid argument",
        }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Parse`] for line `line` of `path`.
    pub fn parse(path: impl Into<PathBuf>, line: usize, message: impl Into<String>) -> Self {
        Error::Parse {
            path: path.into(),
            line,
            // The message echoes the file's text: capped and with control bytes escaped.
            message: kp_fs::shown(&message.into()),
        }
    }

    /// An [`Error::Image`] for `path`.
    pub fn image(path: impl Into<PathBuf>, source: image::ImageError) -> Self {
        Error::Image {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_and_line() {
        let e = Error::parse("a/b.asf", 17, "bad x");
        assert_eq!(e.to_string(), "a/b.asf:17: bad x");
        let e = Error::Xml {
            path: "l.xml".into(),
            line: 3,
            position: 42,
            element: "<part name='07'>".into(),
            message: "missing attribute x".into(),
        };
        assert_eq!(
            e.to_string(),
            "l.xml:3: <part name='07'> (byte 42): missing attribute x"
        );
    }
}
