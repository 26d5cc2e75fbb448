//! Training, evaluation and prediction for kp landmark models.
//!
//! The training loop is in [`trainer`]: it loads a dataset ([`trainer::prepare_data`]), caches
//! decoded images ([`prep`]), feeds shuffled, augmented batches from a background thread
//! ([`loader`]) to a model from kp-models ([`model`]), updates it with [`optim::Adam`], and
//! writes a run folder ([`run`]) after every epoch so a stopped run resumes with the same numbers.
//! [`distributed`] runs the same loop data-parallel, one process per GPU (or CPU share).
//! [`eval`] scores a model ([`metrics`]) and [`predict`] runs a trained run folder on new photos.
//!
//! Recipes are data (`crates/kp-train/recipes/*.toml`, [`config::Recipe`]); a run is one call:
//!
//! ```
//! use kp_train::config::{Recipe, SplitKind, Task, TrainConfig};
//! use kp_train::trainer::{train, TrainOptions};
//!
//! // The seed study's nose-tip recipe (recipes/nose-seed.toml), shortened to a smoke run. An
//! // empty data path reads the datasets folder of KP_DATA_DIR or ../shared/datasets.
//! let mut cfg = TrainConfig::from_recipe(Recipe::Seed, Task::Nose, "");
//! cfg.epochs = 1;
//! cfg.limit = Some(12);
//! cfg.split = SplitKind::Random { val_fraction: 0.25 };
//! if kp_data::find_data_dir().is_some() {
//!     let out = tempfile::tempdir()?;
//!     let summary = train(cfg, &out.path().join("nose"), &TrainOptions::default())?;
//!     let val = summary.val.expect("3 validation faces");
//!     assert!(val.mean_px_error_input.is_finite());
//!     println!("val mean error {:.2} px", val.mean_px_error_input);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod allocator;
pub mod atomic;
pub mod augment;
pub mod bench;
pub mod config;
pub mod detect;
pub mod distributed;
pub mod error;
pub mod eval;
pub mod export;
pub mod figures;
pub mod landmarker;
pub mod loader;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod predict;
pub mod prep;
pub mod pretrained;
pub mod run;
pub mod trainer;

pub use error::{Error, Result};
