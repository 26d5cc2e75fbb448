//! `kp`: facial keypoint detection from the command line.
//!
//! `kp data summary`, `kp train`, `kp eval`, `kp detect`, `kp predict`, `kp submit`, `kp export`, `kp bench`. Errors print one line
//! and exit with status 1.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod args;
mod bench_cmd;
mod data_cmd;
mod detect_cmd;
mod eval_cmd;
mod export_cmd;
mod launch;
mod predict_cmd;
mod submit_cmd;
mod train_cmd;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Facial keypoint detection: datasets, training, evaluation, prediction.
#[derive(Debug, Parser)]
#[command(name = "kp", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Largest image kp decodes, in pixels (width x height): a bigger header is refused
    /// before decoding (a decompression bomb); the images decoded at once on all threads
    /// together hold at most as many.
    #[arg(long, global = true, env = "KP_MAX_PIXELS", default_value_t = kp_data::loading::DEFAULT_MAX_PIXELS,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_pixels: u64,
    /// Read images that a label file names outside its own folder (absolute paths elsewhere,
    /// `..`, links out of it); refused by default.
    #[arg(long, global = true, env = "KP_ALLOW_OUTSIDE_DATA")]
    allow_outside_data: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect datasets.
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// Train a model into a run folder.
    Train(train_cmd::TrainArgs),
    /// Evaluate a trained run (default: the ready model) on a dataset.
    Eval(eval_cmd::EvalArgs),
    /// Find faces (box, score, 5 points) on photos with the bundled YuNet detector.
    Detect(detect_cmd::DetectArgs),
    /// Find every face on photos and predict its landmarks (default: the ready 68-point model).
    Predict(predict_cmd::PredictArgs),
    /// Write a Kaggle-format submission CSV for a dlib XML of face boxes.
    Submit(submit_cmd::SubmitArgs),
    /// Write a trained run (default: the ready model) as an ONNX file.
    Export(export_cmd::ExportArgs),
    /// Time training steps (or inference) of a model on random batches, on the CPU or a GPU.
    Bench(bench_cmd::BenchArgs),
}

fn main() -> ExitCode {
    kp_train::allocator::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let predicts = match &cli.command {
        Command::Eval(_)
        | Command::Detect(_)
        | Command::Predict(_)
        | Command::Submit(_)
        | Command::Export(_) => true,
        Command::Bench(b) => b.infer,
        Command::Data(_) | Command::Train(_) => false,
    };
    if predicts {
        kp_train::allocator::commit_lazily();
    }
    kp_data::loading::set_max_pixels(cli.max_pixels);
    kp_data::confine::set_allow_outside(cli.allow_outside_data);
    let result = match cli.command {
        Command::Data(c) => data_cmd::run(c),
        Command::Train(a) => train_cmd::train(a),
        Command::Eval(a) => eval_cmd::eval(a),
        Command::Detect(a) => detect_cmd::detect(a),
        Command::Predict(a) => predict_cmd::predict(a),
        Command::Submit(a) => submit_cmd::submit(a),
        Command::Export(a) => export_cmd::export(a),
        Command::Bench(a) => bench_cmd::bench(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once: the libraries' errors already write
/// their source into their message (`path: no such file`), so a cause whose text is already
/// there is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_and_its_causes_print_on_one_line_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(kp_train::Error::Io {
            path: "a.toml".into(),
            source: io,
        })
        .context("reading the configuration");
        assert_eq!(
            one_line(&e),
            "reading the configuration: a.toml: no such file"
        );
        let e = anyhow::anyhow!("line one\nline two").context("outer");
        assert_eq!(one_line(&e), "outer: line one line two");
    }
}
