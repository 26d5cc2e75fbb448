//! `cargo xtask fetch`: download (or copy with `--from`) the datasets described in
//! `data/datasets.toml`, verify them and put them in place atomically.
//!
//! * download: `<data>/.downloads/<archive>.part`, resumed with HTTP Range, archive sha256 (when
//!   known), safe unpacking into `<data>/.<folder>.tmp.<pid>`, content check, rename into place;
//! * `--from DIR`: `DIR/<folder>/` (checked against its `MANIFEST.sha256` and the content digest)
//!   or `DIR/<archive file>`;
//! * every installed folder gets a canonical `MANIFEST.sha256`, re-checked on each run.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

mod config;
mod digest;
mod download;
mod extract;
mod install;
#[cfg(test)]
mod tests;

pub use config::{Config, Dataset};
use install::{check_installed, install_from_archive, install_from_folder, State, Verified};

#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// Fetch only these datasets (repeat or comma-separate; default: all in datasets.toml).
    #[arg(long, value_name = "NAME", num_args = 1.., value_delimiter = ',')]
    only: Vec<String>,
    /// Where the dataset folders go [default: <workspace>/data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Take the datasets from this local folder (dataset folders or the official archives)
    /// instead of downloading, e.g. --from ../shared/datasets.
    #[arg(long, value_name = "DIR")]
    from: Option<PathBuf>,
    /// Fetch again even if a verified copy is present.
    #[arg(long)]
    force: bool,
    /// Dataset catalogue [default: <workspace>/data/datasets.toml].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Download archives from URL/<archive file> instead of the URLs in datasets.toml.
    #[arg(long, value_name = "URL")]
    mirror: Option<String>,
    /// Keep downloaded archives in <data-dir>/.downloads after unpacking.
    #[arg(long)]
    keep_archives: bool,
    /// How many times an interrupted download is resumed before giving up.
    #[arg(long, value_name = "N", default_value_t = 3)]
    retries: u32,
}

/// Everything `fetch` needs besides the catalogue (tests build this directly).
#[derive(Debug, Clone)]
pub struct Options {
    pub data_dir: PathBuf,
    pub from: Option<PathBuf>,
    pub force: bool,
    /// Base URL replacing the catalogue URLs: archives are fetched from `<mirror>/<file>`.
    pub mirror: Option<String>,
    pub keep_archives: bool,
    pub retries: u32,
    pub retry_delay: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub progress: bool,
}

impl Options {
    pub fn new(data_dir: impl Into<PathBuf>) -> Options {
        Options {
            data_dir: data_dir.into(),
            from: None,
            force: false,
            mirror: None,
            keep_archives: false,
            retries: 3,
            retry_delay: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(20),
            read_timeout: Duration::from_secs(60),
            progress: false,
        }
    }
}

/// What happened to one dataset.
#[derive(Debug)]
pub enum Action {
    /// A verified copy was already there.
    Present(Verified),
    /// Installed (and verified) from `from`.
    Installed { from: String, verified: Verified },
}

/// The workspace root (the folder above `xtask/`).
pub(crate) fn workspace_root() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_path_buf()
}

/// Fetches every dataset of `data/datasets.toml` into `<workspace>/data` (what `reproduce`
/// does on a fresh machine).
pub fn fetch_all_default() -> Result<()> {
    run(FetchArgs {
        only: Vec::new(),
        data_dir: None,
        from: None,
        force: false,
        config: None,
        mirror: None,
        keep_archives: false,
        retries: 3,
    })
}

pub fn run(args: FetchArgs) -> Result<()> {
    let root = workspace_root();
    let config_path = args
        .config
        .unwrap_or_else(|| root.join("data").join("datasets.toml"));
    let config = Config::load(&config_path)?;
    let selected = config.select(&args.only)?;
    let opts = Options {
        from: args.from,
        force: args.force,
        mirror: args.mirror,
        keep_archives: args.keep_archives,
        retries: args.retries,
        progress: std::io::stderr().is_terminal(),
        ..Options::new(args.data_dir.unwrap_or_else(|| root.join("data")))
    };
    if let Some(from) = &opts.from {
        if !from.is_dir() {
            bail!("--from {}: no such folder", from.display());
        }
    }
    let start = Instant::now();
    let mut failed = Vec::new();
    let mut lines = Vec::new();
    for ds in selected.iter().copied() {
        let t = Instant::now();
        match fetch_dataset(ds, &opts) {
            Ok(Action::Present(v)) => lines.push(format!(
                "{:<40} present    {:>5} files {:>10}  {}",
                ds.name,
                v.files,
                HumanBytes(v.bytes).to_string(),
                v.trust
            )),
            Ok(Action::Installed { from, verified: v }) => {
                log_terms(ds);
                lines.push(format!(
                    "{:<40} installed  {:>5} files {:>10}  {}  ({:.1} s, from {from})",
                    ds.name,
                    v.files,
                    HumanBytes(v.bytes).to_string(),
                    v.trust,
                    t.elapsed().as_secs_f64()
                ))
            }
            Err(e) => {
                tracing::error!("{}: {e:#}", ds.name);
                let short = if ds.archive.is_none() && opts.from.is_none() {
                    "local-only: use --from DIR (e.g. --from ../shared/datasets)".to_string()
                } else {
                    first_line(&e)
                };
                lines.push(format!("{:<40} FAILED     {short}", ds.name));
                failed.push(ds.name.as_str());
            }
        }
    }
    println!("data folder: {}", opts.data_dir.display());
    for l in &lines {
        println!("{l}");
    }
    println!("done in {:.1} s", start.elapsed().as_secs_f64());
    if !failed.is_empty() {
        bail!(
            "{} of {} dataset(s) not fetched: {} (details above)",
            failed.len(),
            selected.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// The first line of an error, shortened for the summary table.
fn first_line(e: &anyhow::Error) -> String {
    const MAX: usize = 110;
    let s = format!("{e:#}");
    let line = s.lines().next().unwrap_or_default();
    if line.chars().count() <= MAX {
        line.to_string()
    } else {
        let cut: String = line.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

/// Fetches one dataset into `opts.data_dir/<folder>` (or confirms a verified copy is there).
pub fn fetch_dataset(ds: &Dataset, opts: &Options) -> Result<Action> {
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("cannot create {}", opts.data_dir.display()))?;
    let target = opts.data_dir.join(&ds.folder);
    if !opts.force {
        match check_installed(ds, &target, opts) {
            State::Verified(v) => {
                tracing::info!("{}: already present and verified ({})", ds.name, v.trust);
                return Ok(Action::Present(v));
            }
            State::Broken(e) => {
                tracing::warn!("{}: the existing copy will be replaced: {e:#}", ds.name)
            }
            State::Missing => {}
        }
    }
    if let Some(from) = &opts.from {
        let folder = from.join(&ds.folder);
        if folder.is_dir() {
            let verified = install_from_folder(ds, &folder, &target, opts)?;
            return Ok(Action::Installed {
                from: folder.display().to_string(),
                verified,
            });
        }
        let Some(archive) = &ds.archive else {
            bail!(
                "{} has no `{}/` folder; `{}` is local-only ({})",
                from.display(),
                ds.folder,
                ds.name,
                ds.source
            );
        };
        let file = from.join(&archive.file);
        if !file.is_file() {
            bail!(
                "{} holds neither `{}/` nor the archive `{}`",
                from.display(),
                ds.folder,
                archive.file
            );
        }
        let verified = install_from_archive(ds, archive, &file, &target, false, opts)?;
        return Ok(Action::Installed {
            from: file.display().to_string(),
            verified,
        });
    }
    let Some(archive) = &ds.archive else {
        bail!("{}", ds.local_only_message());
    };
    let (path, url) = download_archive(archive, opts)?;
    let verified = install_from_archive(ds, archive, &path, &target, true, opts)?;
    if !opts.keep_archives {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!("cannot remove {}: {e}", path.display());
        }
    }
    Ok(Action::Installed {
        from: url,
        verified,
    })
}

fn log_terms(ds: &Dataset) {
    tracing::debug!("{}: {}", ds.name, ds.description);
    tracing::info!(
        "{}: licence: {}; cite: {}",
        ds.name,
        ds.licence,
        ds.citation
    );
}

/// Downloads the archive into `<data>/.downloads/` (trying each URL in turn); returns its path
/// and the URL it came from.
fn download_archive(archive: &config::Archive, opts: &Options) -> Result<(PathBuf, String)> {
    let dir = opts.data_dir.join(".downloads");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dest = dir.join(&archive.file);
    let part = dir.join(format!("{}.part", archive.file));
    if dest.is_file() {
        if opts.force && archive.sha256.is_none() {
            std::fs::remove_file(&dest)
                .with_context(|| format!("cannot remove {}", dest.display()))?;
        } else {
            tracing::info!("using the already downloaded {}", dest.display());
            return Ok((dest.clone(), dest.display().to_string()));
        }
    }
    let urls = match &opts.mirror {
        Some(m) => vec![format!("{}/{}", m.trim_end_matches('/'), archive.file)],
        None => archive.urls.clone(),
    };
    let agent = download::agent(opts);
    let mut errors = Vec::new();
    for url in &urls {
        match download::download(&agent, url, &part, &dest, opts) {
            Ok(()) => return Ok((dest, url.clone())),
            Err(e) => {
                if urls.len() > 1 {
                    tracing::warn!("{e:#}");
                }
                errors.push(format!("{e:#}"));
            }
        }
    }
    // Say "no internet?" once when every URL was unreachable.
    let hint = download::OFFLINE_HINT;
    if errors.iter().all(|e| e.ends_with(hint)) {
        let hosts: Vec<&str> = errors.iter().map(|e| e.trim_end_matches(hint)).collect();
        bail!(
            "could not download {}: {}{hint}",
            archive.file,
            hosts.join("; ")
        );
    }
    bail!("could not download {}: {}", archive.file, errors.join("; "))
}

/// A byte-counting progress bar on stderr (hidden when `enabled` is false).
pub(crate) fn progress_bar(
    enabled: bool,
    msg: &str,
    total: Option<u64>,
    start: u64,
) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::no_length(),
    };
    let template = if total.is_some() {
        "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}"
    } else {
        "{msg} {spinner} {binary_bytes} {binary_bytes_per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(msg.to_string());
    bar.set_position(start);
    bar.reset_eta();
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
