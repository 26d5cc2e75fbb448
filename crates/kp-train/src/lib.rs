//! Training, evaluation and prediction for kp landmark models.
//!
//! The training loop is in [`trainer`]: it loads a dataset ([`trainer::prepare_data`]), caches
//! decoded images ([`prep`]), feeds shuffled, augmented batches from a background thread
//! ([`loader`]) to a model from kp-models ([`model`]), updates it with [`optim::Adam`], and
//! writes a run folder ([`run`]) after every epoch so a stopped run resumes with the same numbers.
//! [`eval`] scores a model ([`metrics`]) and [`predict`] runs a trained run folder on new photos.
//!
//! ```no_run
//! use kp_train::{config::{Task, TrainConfig}, trainer::{train, TrainOptions}};
//! let mut cfg = TrainConfig::recipe(Task::Nose, "../shared/datasets");
//! cfg.epochs = 1;
//! let summary = train(cfg, "runs/nose".as_ref(), &TrainOptions::default())?;
//! println!("val mean error {:.2} px", summary.val.unwrap().mean_px_error_input);
//! # Ok::<(), kp_train::Error>(())
//! ```
#![warn(missing_docs)]

pub mod atomic;
pub mod augment;
pub mod bench;
pub mod config;
pub mod detect;
pub mod error;
pub mod eval;
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
