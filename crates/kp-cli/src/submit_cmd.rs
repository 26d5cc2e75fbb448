//! `kp submit`: a Kaggle-format submission CSV for a dlib XML of face boxes.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use kp_data::{GrayF32, Point};

use crate::args::{MirrorArgs, ModelArgs};

/// Arguments of `kp submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// dlib-style XML with one box per face (e.g. labels_ibug_300W_test_parsed.xml).
    #[arg(long)]
    xml: PathBuf,
    /// Submission CSV to write (`Id,Predicted`).
    #[arg(long)]
    out: PathBuf,
    /// Write rows for faces whose image is missing too (predicted on a blank box) instead of failing.
    #[arg(long)]
    allow_missing: bool,
    #[command(flatten)]
    mirror: MirrorArgs,
}

pub fn submit(a: SubmitArgs) -> Result<()> {
    let predictor = a.model.predictor()?;
    let predictor = a.mirror.apply(predictor)?;
    let dataset = kp_data::dlib_xml::load_dlib_xml(&a.xml)?;
    let missing: Vec<usize> = (0..dataset.faces.len())
        .filter(|&i| !dataset.faces[i].image.is_file())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "{} of {} faces have no image (first: {})",
            missing.len(),
            dataset.faces.len(),
            dataset.faces[missing[0]].image.display()
        );
        if !a.allow_missing {
            bail!(
                "{} faces of {} have missing images; pass --allow-missing to predict them on a blank box",
                missing.len(),
                a.xml.display()
            );
        }
    }
    // Faces decoded in parallel, 64 at a time through the network, with a progress bar.
    let bar = indicatif::ProgressBar::new(dataset.faces.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} faces {per_sec} ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let mut preds: Vec<Vec<Point>> = Vec::with_capacity(dataset.faces.len());
    for chunk in dataset.faces.chunks(64) {
        use rayon::prelude::*;
        let items = chunk
            .par_iter()
            .map(|f| {
                let bbox = f
                    .bbox
                    .with_context(|| format!("{}: a face without a box", f.image.display()))?;
                let img = if f.image.is_file() {
                    kp_data::loading::load_gray(&f.image)?
                } else {
                    // A blank (mid-grey) image just large enough to hold the box.
                    let w = (bbox.right().max(1.0)).ceil() as u32;
                    let h = (bbox.bottom().max(1.0)).ceil() as u32;
                    GrayF32::from_pixel(w, h, image::Luma([0.0]))
                };
                Ok((img, Some(bbox)))
            })
            .collect::<Result<Vec<_>>>()?;
        preds.extend(predictor.predict_images(&items)?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let k = preds.first().map(|p| p.len()).unwrap_or(0);
    let mut csv = String::with_capacity(preds.len() * k * 2 * 16 + 16);
    csv.push_str("Id,Predicted\n");
    for (face, pts) in preds.iter().enumerate() {
        for (j, p) in pts.iter().enumerate() {
            let id = 2 * k * face + 2 * j;
            csv.push_str(&format!("{},{}\n{},{}\n", id, p.x, id + 1, p.y));
        }
    }
    kp_fs::write_atomic(&a.out, csv.as_bytes())?;
    // Rows predicted on blank images look like any other in the Kaggle format: they are listed
    // beside the submission (`OUT.missing.csv`: face, image, first and last row Id) and said
    // loudly, so that no one takes the file for a complete prediction.
    let marks = a.out.with_extension("missing.csv");
    if missing.is_empty() {
        let _ = std::fs::remove_file(&marks);
    } else {
        let mut list = String::from("face,image,first_id,last_id\n");
        for &i in &missing {
            list.push_str(&format!(
                "{i},{},{},{}\n",
                crate::predict_cmd::csv_field(&dataset.faces[i].image),
                2 * k * i,
                2 * k * (i + 1) - 1
            ));
        }
        kp_fs::write_atomic(&marks, list.as_bytes())?;
        eprintln!(
            "warning: {} of {} faces were predicted on a blank image, not on their photo: their \
             rows are placeholders (listed in {})",
            missing.len(),
            preds.len(),
            marks.display()
        );
    }
    println!(
        "{}: {} faces x {} points = {} rows ({} faces without image{})",
        a.out.display(),
        preds.len(),
        k,
        preds.len() * k * 2,
        missing.len(),
        if missing.is_empty() {
            String::new()
        } else {
            format!(": placeholder rows, listed in {}", marks.display())
        }
    );
    Ok(())
}
