//! Facial landmark datasets for kp.
//!
//! Reads the IMM Face Database (`.asf`), dlib/iBUG 300-W XML label files and 300-W `.pts`
//! files into one [`Dataset`] of [`Face`]s in 0-based pixel coordinates (pixel centres at
//! integers); knows the IMM-58 and iBUG-68 [`LandmarkScheme`]s (groups, flip permutations);
//! makes reproducible train/validation [`Split`]s; loads images as [`GrayF32`]; exports
//! annotations as polars DataFrames / CSV; and summarises a dataset.
//!
//! Errors are one [`Error`] enum whose messages name the file and the line or XML element.
//!
//! # Example
//!
//! ```
//! use kp_data::{dlib_xml, load_dataset, scheme::IBUG68, Split, Summary};
//!
//! # fn main() -> kp_data::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let xml = dir.path().join("labels.xml");
//! std::fs::write(
//!     &xml,
//!     "<dataset><images>\
//!        <image file='a.jpg'><box top='10' left='20' width='30' height='30'/></image>\
//!        <image file='b.jpg'><box top='1' left='2' width='3' height='4'/></image>\
//!      </images></dataset>",
//! )
//! .unwrap();
//!
//! let dataset = load_dataset(&xml)?; // format detected from the path
//! assert_eq!(dataset.len(), 2);
//! assert_eq!(dataset.faces[0].image, dir.path().join("a.jpg"));
//! assert!(!dataset.faces[0].is_labelled()); // boxes only, like the Kaggle test file
//!
//! let split = Split::random(dataset.len(), 0.5, 42)?;
//! assert_eq!((split.train.len(), split.val.len()), (1, 1));
//!
//! let summary = Summary::compute(&dataset)?;
//! assert_eq!(summary.missing_images, 2);
//!
//! // Round trip through dlib XML.
//! let out = dir.path().join("copy.xml");
//! dlib_xml::write_dlib_xml(&out, &dataset)?;
//! assert_eq!(load_dataset(&out)?.faces, dataset.faces);
//!
//! // The iBUG-68 flip maps the outer eye corners onto each other.
//! assert_eq!(IBUG68.flip[36], 45);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod check;
pub mod confine;
pub mod dlib_xml;
pub mod error;
pub mod face;
pub mod format;
pub mod geometry;
pub mod gray;
pub mod imm;
pub mod loading;
pub mod locate;
pub mod pts;
pub mod scheme;
pub mod skip;
pub mod split;
pub mod summary;
#[cfg(feature = "tables")]
pub mod table;

pub use dlib_xml::{load_dlib_xml, read_dlib_xml, write_dlib_xml};
pub use error::{Error, Result};
pub use face::{Dataset, Face, Gender};
pub use format::{load_dataset, load_dataset_skipping_bad, DatasetFormat};
pub use geometry::{BBox, Point};
pub use gray::{gray_from_u8, gray_to_u8, GrayF32};
pub use imm::load_imm;
pub use loading::{image_dimensions, load_face_resized, load_faces_resized, load_gray};
pub use locate::{find_data_dir, test_data_dir};
pub use pts::{load_pts_dir, read_pts};
pub use scheme::{LandmarkScheme, IBUG68, IMM58};
pub use skip::SkipReport;
pub use split::Split;
pub use summary::Summary;
#[cfg(feature = "tables")]
pub use table::{read_csv, to_dataframe, write_csv};
