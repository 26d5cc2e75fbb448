//! Project automation for the kp workspace: `cargo xtask <command>`.

use std::io::IsTerminal;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tracing_subscriber::EnvFilter;

mod bench;
mod fetch;
mod reproduce;

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
}

fn main() {
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
    };
    if let Err(e) = result {
        // `{:#}`: the whole cause chain on one line, without a backtrace.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
