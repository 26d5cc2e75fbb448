//! `kp`: facial keypoint detection from the command line.
//!
//! `kp data summary`, `kp train`, `kp eval`, `kp detect`, `kp predict`, `kp submit`, `kp bench`. Errors print one line
//! and exit with status 1.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench_cmd;
mod data_cmd;
mod detect_cmd;
mod predict_cmd;
mod train_cmd;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (index in mimalloc v3's `mi_option_e`).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Tells mimalloc to keep freed memory instead of handing it back to the OS after a delay:
/// a training step frees and reallocates the same large buffers, and every purge made the
/// kernel zero fresh pages again (about 9% of a FaceKeypointNet step).
fn keep_freed_memory() {
    // SAFETY: sets one documented option; -1 = never purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

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
    /// Find faces (box, score, 5 points) on photos with the bundled YuNet detector.
    Detect(detect_cmd::DetectArgs),
    /// Predict keypoints on photos.
    Predict(predict_cmd::PredictArgs),
    /// Write a Kaggle-format submission CSV for a dlib XML of face boxes.
    Submit(predict_cmd::SubmitArgs),
    /// Time training steps (or inference) of a model on random batches, on the CPU or a GPU.
    Bench(bench_cmd::BenchArgs),
}

fn main() -> ExitCode {
    keep_freed_memory();
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
        Command::Detect(a) => detect_cmd::detect(a),
        Command::Predict(a) => predict_cmd::predict(a),
        Command::Submit(a) => predict_cmd::submit(a),
        Command::Bench(a) => bench_cmd::bench(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // SAFETY: reads and sets one option.
        let before = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // mimalloc v3's default purge delay (ms) identifies the option's index.
            assert_eq!(before, 1000);
        }
        keep_freed_memory();
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
            -1
        );
    }
}
