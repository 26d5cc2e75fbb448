//! Figures for facial keypoint work, drawn from plain data into `image::RgbImage`s.
//!
//! The crate depends on no other `kp` crate but `kp-fs` (its atomic writes): every function
//! takes slices of numbers, point lists or images and returns an image (or HTML text), so any
//! program can use it. Text is drawn with the embedded DejaVu Sans font; no system fonts are
//! needed.
//!
//! | module | figure |
//! |---|---|
//! | [`overlay`] | ground-truth (green) and predicted (red) keypoints on a face |
//! | [`grid`] | images in rows and columns with a caption under each |
//! | [`curves`] | training loss per step and validation loss per epoch, one or several runs |
//! | [`filters`] | first-layer convolution filters as a grid |
//! | [`ced`] | cumulative error distribution, AUC and failure rate |
//! | [`table`] | a table as HTML or as an image |
//! | [`html`] | a one-file HTML report of tables and figures |
//! | [`io`] | atomic PNG / file output |
//!
//! # Example
//!
//! ```
//! use image::{DynamicImage, GrayImage, Luma};
//! use kp_viz::{
//!     image_grid, learning_curves, overlay_keypoints, save_png, CurvesOptions, GridOptions,
//!     LossCurve, OverlayOptions,
//! };
//!
//! # fn main() -> kp_viz::Result<()> {
//! // An 80x60 grey "face" with one ground-truth and one predicted nose tip.
//! let face = DynamicImage::ImageLuma8(GrayImage::from_pixel(80, 60, Luma([120])));
//! let overlay = overlay_keypoints(&face, &[(40.0, 32.0)], &[(43.0, 30.0)], &OverlayOptions::default())?;
//! assert_eq!(overlay.dimensions(), (320, 240)); // small faces are upscaled 4x
//!
//! let grid = image_grid(&[overlay.clone(), overlay], &["face 1", "face 2"], &GridOptions::default())?;
//!
//! let run = LossCurve::from_epochs("", &[1.0, 0.6, 0.5, 0.4], &[0.7, 0.45], 2);
//! let curve = learning_curves(&[run], &CurvesOptions::default())?;
//! assert_eq!(curve.dimensions(), (900, 540));
//!
//! let dir = std::env::temp_dir().join(format!("kp-viz-doc-{}", std::process::id()));
//! save_png(&grid, dir.join("grid.png"))?;
//! save_png(&curve, dir.join("curve.png"))?;
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod ced;
mod chart;
pub mod convert;
pub mod curves;
pub mod error;
pub mod filters;
pub mod grid;
pub mod html;
pub mod io;
pub mod overlay;
pub mod style;
pub mod table;
pub mod text;

pub use ced::{
    auc, ced_chart, ced_curve, ced_legend, ced_stats, ced_steps, failure_rate, CedOptions,
    CedSeries, CedStats,
};
pub use chart::{LegendPosition, MIN_CHART_SIDE};
pub use convert::{gray_from_f32, gray_to_f32, ValueRange};
pub use curves::{learning_curves, CurvesOptions, LossCurve};
pub use error::{Error, Result};
pub use filters::{filter_grid, FilterChannels, FilterGridOptions};
pub use grid::{image_grid, GridOptions};
pub use html::{HtmlReport, Section};
pub use io::{encode_png, save_png, write_atomic};
pub use overlay::{
    auto_radius, contours_for, faces_on_photo, overlay_keypoints, scale_point, upscale_factor,
    OverlayOptions, Upscale, IBUG68_CONTOURS,
};
pub use table::{escape_html, Table, TableImageOptions};
pub use text::register_plotters_fonts;
