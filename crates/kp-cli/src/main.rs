//! `kp`: facial keypoint detection from the command line.
//!
//! `kp data summary`, `kp train`, `kp eval`, `kp predict`, `kp submit`. Errors print one line
//! and exit with status 1.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod data_cmd;
mod predict_cmd;
mod train_cmd;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Facial keypoint detection: datasets, training, evaluation, prediction.
#[derive(Debug, Parser)]
#[command(name = "kp", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect datasets.
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// Train a model into a run folder.
    Train(train_cmd::TrainArgs),
    /// Evaluate a trained run on a dataset.
    Eval(train_cmd::EvalArgs),
    /// Predict keypoints on photos.
    Predict(predict_cmd::PredictArgs),
    /// Write a Kaggle-format submission CSV for a dlib XML of face boxes.
    Submit(predict_cmd::SubmitArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Data(c) => data_cmd::run(c),
        Command::Train(a) => train_cmd::train(a),
        Command::Eval(a) => train_cmd::eval(a),
        Command::Predict(a) => predict_cmd::predict(a),
        Command::Submit(a) => predict_cmd::submit(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
