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
    },
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Summary { path, json } => {
            let dataset = kp_data::format::load_dataset(&path)
                .with_context(|| format!("loading {}", path.display()))?;
            let summary = kp_data::summary::Summary::compute(&dataset)?;
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                println!("{summary}");
            }
            Ok(())
        }
    }
}
