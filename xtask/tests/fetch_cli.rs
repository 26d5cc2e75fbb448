//! End-to-end tests of the `xtask fetch` command line (no network needed).

use std::path::Path;
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run xtask")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A source folder `src/toy/` with a manifest, and a catalogue describing it.
fn setup(root: &Path) -> (String, String, String) {
    let files: [(&str, &[u8]); 3] = [
        ("a.txt", b"alpha\n"),
        ("img/b.jpg", &[0xff, 0xd8, 0xff, 0xe0, 1, 2, 3]),
        ("img/c.asf", b"58\n"),
    ];
    let src = root.join("src");
    let mut lines: Vec<String> = Vec::new();
    for (p, d) in files {
        let path = src.join("toy").join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, d).unwrap();
        lines.push(format!("{}  {p}\n", sha(d)));
    }
    lines.sort_by(|a, b| a[66..].cmp(&b[66..]));
    let manifest = lines.concat();
    std::fs::write(src.join("toy/MANIFEST.sha256"), &manifest).unwrap();
    let bytes: usize = files.iter().map(|(_, d)| d.len()).sum();
    let cfg = format!(
        "schema = 1\n[[dataset]]\nname = \"toy\"\nfolder = \"toy\"\ndescription = \"toy set\"\n\
         source = \"the toy factory\"\nlicence = \"public domain\"\ncitation = \"none\"\n\
         [dataset.content]\ndigest = \"{}\"\nfiles = 3\nbytes = {bytes}\n",
        sha(manifest.as_bytes())
    );
    let cfg_path = root.join("datasets.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    (
        cfg_path.display().to_string(),
        root.join("data").display().to_string(),
        src.display().to_string(),
    )
}

#[test]
fn fetch_from_local_folder_then_skip() {
    let t = tempfile::tempdir().unwrap();
    let (cfg, data, src) = setup(t.path());
    let o = xtask(&[
        "fetch",
        "--config",
        &cfg,
        "--data-dir",
        &data,
        "--from",
        &src,
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("toy") && out.contains("installed") && out.contains("content digest ok"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(Path::new(&data).join("toy/a.txt")).unwrap(),
        b"alpha\n"
    );

    let o = xtask(&["fetch", "--config", &cfg, "--data-dir", &data]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("present"), "{out}");
}

#[test]
fn fetch_reports_failures_with_a_nonzero_exit() {
    let t = tempfile::tempdir().unwrap();
    let (cfg, data, src) = setup(t.path());

    // Local-only dataset without --from: explains where it comes from.
    let o = xtask(&["fetch", "--config", &cfg, "--data-dir", &data]);
    let (out, err) = text(&o);
    assert!(!o.status.success());
    assert!(out.contains("FAILED"), "{out}");
    assert!(
        err.contains("the toy factory") && err.contains("--from DIR"),
        "{err}"
    );

    // Unknown dataset name.
    let o = xtask(&[
        "fetch",
        "--config",
        &cfg,
        "--data-dir",
        &data,
        "--only",
        "nope",
    ]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("unknown dataset `nope`") && err.contains("known: toy"),
        "{err}"
    );

    // Corrupted source file: named, with both digests, nothing installed.
    let bad = Path::new(&src).join("toy/img/c.asf");
    std::fs::write(&bad, b"59\n").unwrap();
    let o = xtask(&[
        "fetch",
        "--config",
        &cfg,
        "--data-dir",
        &data,
        "--from",
        &src,
    ]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains(&bad.display().to_string()), "{err}");
    assert!(
        err.contains(&sha(b"58\n")) && err.contains(&sha(b"59\n")),
        "{err}"
    );
    assert!(!Path::new(&data).join("toy").exists());
}
