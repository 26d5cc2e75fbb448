//! `kp data ...`: dataset inspection.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;

/// Dataset commands.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Count images, faces, points per face, image sizes and split sizes of a dataset
    /// (IMM folder, dlib XML file or folder of .pts files; the format is detected).
    Summary {
        /// The dataset.
        path: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Leave out bad entries (and report them) instead of failing.
        #[arg(long)]
        skip_bad: bool,
    },
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Summary {
            path,
            json,
            skip_bad,
        } => {
            let (dataset, skipped) = kp_data::format::load_dataset_with(&path, skip_bad)
                .with_context(|| format!("loading {}", path.display()))?;
            let summary = kp_data::summary::Summary::compute(&dataset)?;
            let report = kp_data::SkipReport::new(&skipped);
            if json {
                let mut v = serde_json::to_value(&summary)?;
                if skip_bad {
                    v["skipped"] = serde_json::json!({
                        "total": report.total(),
                        "by_kind": report.by_kind,
                        "messages": report.messages,
                    });
                }
                println!("{v}");
            } else {
                println!("{summary}");
                if skip_bad {
                    println!("{report}");
                    for m in &report.messages {
                        println!("  {m}");
                    }
                }
            }
            Ok(())
        }
    }
}
