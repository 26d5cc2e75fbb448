//! Project automation for the kp workspace: `cargo xtask <command>`.

use std::io::IsTerminal;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod fetch;
mod onnx;
mod pretrained;
mod reproduce;
mod venv;
mod versus_dlib;

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "kp project automation", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Download (or copy with --from) the datasets listed in data/datasets.toml and verify them.
    Fetch(fetch::FetchArgs),
    /// Train the study's whole experiment matrix and write report/index.html.
    Reproduce(reproduce::ReproduceArgs),
    /// Time training steps, inference and data loading (optionally against PyTorch).
    Bench(bench::BenchArgs),
    /// Export every model to ONNX and check the files in onnx.checker, onnxruntime and OpenCV.
    Onnx(onnx::OnnxArgs),
    /// Train (or take --run), write and measure the ready model in models/landmarks/ibug68.
    Pretrained(pretrained::PretrainedArgs),
    /// Score a 300-W model and dlib's 68-point model on the same held-out faces and boxes,
    /// with CED curves of both (needs a Python with dlib-bin and face-recognition-models).
    VersusDlib(versus_dlib::VersusDlibArgs),
}

fn main() {
    kp_train::allocator::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .init();
    let result = match Cli::parse().command {
        Command::Fetch(args) => fetch::run(args),
        Command::Reproduce(args) => reproduce::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Onnx(args) => onnx::run(args).map(|rows| {
            let passed = rows.iter().filter(|r| r.pass).count();
            println!("{passed} of {} ONNX files match kp", rows.len());
        }),
        Command::Pretrained(args) => pretrained::run(args),
        Command::VersusDlib(args) => versus_dlib::run(args),
    };
    if let Err(e) = result {
        // `{:#}`: the whole cause chain on one line, without a backtrace.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
