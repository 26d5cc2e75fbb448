//! Tests of the fetch logic against a tiny local HTTP server and temporary folders.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::config::{Config, Dataset};
use super::digest::{sha256_bytes, Manifest, MANIFEST};
use super::extract::safe_relative_path;
use super::install::{check_installed, State, Trust};
use super::{fetch_dataset, Action, Options};

// ---------------------------------------------------------------- test data

/// Deterministic, incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sample_files() -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "01-1m.asf".to_string(),
            b"58 points\n0 4 0.1 0.2 0 0 1\n".to_vec(),
        ),
        ("01-1m.jpg".to_string(), noise(150_000, 1)),
        ("sub/dir/notes.txt".to_string(), b"hello\n".to_vec()),
    ]
}

fn manifest_of(files: &[(String, Vec<u8>)]) -> Manifest {
    Manifest {
        entries: files
            .iter()
            .map(|(p, d)| (p.clone(), sha256_bytes(d)))
            .collect(),
    }
}

fn make_zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        w.start_file(name.as_str(), opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

enum TarItem<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
}

/// Builds a tar.gz writing raw header names (so that hostile names can be tested).
fn make_tar_gz(items: &[TarItem]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for item in items {
        let mut h = tar::Header::new_gnu();
        let (name, data, kind): (&str, &[u8], tar::EntryType) = match item {
            TarItem::File(n, d) => (n, d, tar::EntryType::Regular),
            TarItem::Dir(n) => (n, &[], tar::EntryType::Directory),
            TarItem::Symlink(n, _) => (n, &[], tar::EntryType::Symlink),
        };
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        if let TarItem::Symlink(_, target) = item {
            gnu.linkname[..target.len()].copy_from_slice(target.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

struct ArchiveSpec<'a> {
    kind: &'a str,
    file: &'a str,
    sha256: Option<String>,
    unpacked: &'a str,
    required: &'a [&'a str],
}

fn dataset(name: &str, manifest: &Manifest, bytes: u64, archive: Option<ArchiveSpec>) -> Dataset {
    let mut toml = format!(
        "schema = 1\n[[dataset]]\nname = \"{name}\"\nfolder = \"{name}\"\ndescription = \"d\"\n\
         source = \"made by the test\"\nlicence = \"l\"\ncitation = \"c\"\n\
         [dataset.content]\ndigest = \"{}\"\nfiles = {}\nbytes = {bytes}\n",
        manifest.digest(),
        manifest.entries.len()
    );
    if let Some(a) = archive {
        toml.push_str(&format!(
            "[dataset.archive]\nkind = \"{}\"\nfile = \"{}\"\nurls = [\"http://unused.invalid/{}\"]\n\
             unpacked = \"{}\"\n",
            a.kind, a.file, a.file, a.unpacked
        ));
        if let Some(s) = a.sha256 {
            toml.push_str(&format!("sha256 = \"{s}\"\n"));
        }
        if !a.required.is_empty() {
            let r: Vec<String> = a.required.iter().map(|r| format!("\"{r}\"")).collect();
            toml.push_str(&format!("required = [{}]\n", r.join(", ")));
        }
    }
    Config::parse(&toml).unwrap().datasets.remove(0)
}

fn zip_dataset(archive: &[u8], sha: Option<String>) -> Dataset {
    let files = sample_files();
    let bytes = files.iter().map(|(_, d)| d.len() as u64).sum();
    let _ = archive;
    dataset(
        "faces",
        &manifest_of(&files),
        bytes,
        Some(ArchiveSpec {
            kind: "zip",
            file: "faces.zip",
            sha256: sha,
            unpacked: "content",
            required: &[],
        }),
    )
}

fn opts(data: &Path) -> Options {
    Options {
        retry_delay: Duration::ZERO,
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(10),
        ..Options::new(data)
    }
}

fn assert_installed_files(dir: &Path, files: &[(String, Vec<u8>)]) {
    for (p, d) in files {
        let got = std::fs::read(dir.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(got == *d, "{p} differs");
    }
    assert!(dir.join(MANIFEST).is_file());
}

/// Nothing but `allowed` entries may be left in the data folder (no staging, no half dataset).
fn assert_data_dir_holds(data: &Path, allowed: &[&str]) {
    let mut names: Vec<String> = match std::fs::read_dir(data) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    for n in &names {
        assert!(
            allowed.contains(&n.as_str()),
            "unexpected {n} in {}",
            data.display()
        );
    }
}

fn downloads(data: &Path) -> Vec<String> {
    match std::fs::read_dir(data.join(".downloads")) {
        Ok(rd) => {
            let mut v: Vec<String> = rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
        Err(_) => Vec::new(),
    }
}

// ---------------------------------------------------------------- HTTP server

#[derive(Clone, Copy, PartialEq, Eq)]
enum RangeSupport {
    Yes,
    No,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Hit {
    path: String,
    range_from: Option<u64>,
    status: u16,
}

struct Server {
    base: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Server {
    /// Serves `files` on 127.0.0.1; the first `cuts` responses stop after `cut_at` body bytes.
    fn start(
        files: HashMap<String, Vec<u8>>,
        range: RangeSupport,
        cuts: usize,
        cut_at: usize,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&hits);
        let cuts_left = AtomicUsize::new(cuts);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let cut = cuts_left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_sub(1))
                    .is_ok();
                if let Some(hit) = handle(stream, &files, range, cut.then_some(cut_at)) {
                    log.lock().unwrap().push(hit);
                }
            }
        });
        Server { base, hits }
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

fn handle(
    mut stream: TcpStream,
    files: &HashMap<String, Vec<u8>>,
    range: RangeSupport,
    cut_at: Option<usize>,
) -> Option<Hit> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let path = request_line.split_whitespace().nth(1)?.to_string();
    let mut range_from = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range_from = v
                    .trim()
                    .strip_prefix("bytes=")
                    .and_then(|r| r.strip_suffix('-'))
                    .and_then(|n| n.parse::<u64>().ok());
            }
        }
    }
    let name = path.trim_start_matches('/');
    let (status, headers, body): (u16, String, &[u8]) = match files.get(name) {
        None => (404, String::new(), &[]),
        Some(data) => match (range, range_from) {
            (RangeSupport::Yes, Some(from)) if from as usize >= data.len() => (
                416,
                format!("Content-Range: bytes */{}\r\n", data.len()),
                &[],
            ),
            (RangeSupport::Yes, Some(from)) => (
                206,
                format!(
                    "Content-Range: bytes {from}-{}/{}\r\n",
                    data.len() - 1,
                    data.len()
                ),
                &data[from as usize..],
            ),
            _ => (200, "Accept-Ranges: none\r\n".to_string(), &data[..]),
        },
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n{headers}Connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let send = cut_at.map_or(body.len(), |c| c.min(body.len()));
    let _ = stream.write_all(&body[..send]);
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
    Some(Hit {
        path: name.to_string(),
        range_from,
        status,
    })
}

fn serve_one(file: &str, data: Vec<u8>, range: RangeSupport, cuts: usize, cut_at: usize) -> Server {
    Server::start(
        HashMap::from([(file.to_string(), data)]),
        range,
        cuts,
        cut_at,
    )
}

fn temp() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    (t, data)
}

// ---------------------------------------------------------------- download mode

#[test]
fn download_verifies_unpacks_and_then_skips() {
    let files = sample_files();
    let zip = make_zip(&files);
    let ds = zip_dataset(&zip, Some(sha256_bytes(&zip)));
    let server = serve_one("faces.zip", zip, RangeSupport::Yes, 0, 0);
    let (_t, data) = temp();
    let o = Options {
        mirror: Some(server.base.clone()),
        ..opts(&data)
    };
    match fetch_dataset(&ds, &o).unwrap() {
        Action::Installed { from, verified } => {
            assert!(from.ends_with("/faces.zip"), "{from}");
            assert_eq!(verified.trust, Trust::ContentDigest);
            assert_eq!(verified.files, files.len());
        }
        other => panic!("expected an install, got {other:?}"),
    }
    assert_installed_files(&data.join("faces"), &files);
    assert!(
        downloads(&data).is_empty(),
        "archive kept: {:?}",
        downloads(&data)
    );
    assert_data_dir_holds(&data, &["faces", ".downloads"]);
    // Second run: present and verified, no request made.
    assert!(matches!(
        fetch_dataset(&ds, &o).unwrap(),
        Action::Present(_)
    ));
    assert_eq!(server.hits().len(), 1);
    // --force fetches again.
    let forced = Options {
        force: true,
        ..o.clone()
    };
    assert!(matches!(
        fetch_dataset(&ds, &forced).unwrap(),
        Action::Installed { .. }
    ));
    assert_eq!(server.hits().len(), 2);
}

#[test]
fn interrupted_download_resumes_with_range_in_the_same_run() {
    let files = sample_files();
    let zip = make_zip(&files);
    let ds = zip_dataset(&zip, Some(sha256_bytes(&zip)));
    let server = serve_one("faces.zip", zip, RangeSupport::Yes, 1, 40_000);
    let (_t, data) = temp();
    let o = Options {
        mirror: Some(server.base.clone()),
        ..opts(&data)
    };
    assert!(matches!(
        fetch_dataset(&ds, &o).unwrap(),
        Action::Installed { .. }
    ));
    assert_installed_files(&data.join("faces"), &files);
    let hits = server.hits();
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert_eq!((hits[0].range_from, hits[0].status), (None, 200));
    assert_eq!((hits[1].range_from, hits[1].status), (Some(40_000), 206));
}

#[test]
fn interrupted_download_keeps_part_and_next_run_resumes() {
    let files = sample_files();
    let zip = make_zip(&files);
    let ds = zip_dataset(&zip, Some(sha256_bytes(&zip)));
    let server = serve_one("faces.zip", zip, RangeSupport::Yes, 1, 25_000);
    let (_t, data) = temp();
    let o = Options {
        mirror: Some(server.base.clone()),
        retries: 0,
        ..opts(&data)
    };
    let err = format!("{:#}", fetch_dataset(&ds, &o).unwrap_err());
    assert!(err.contains("25000"), "{err}");
    assert!(err.contains("next run resumes"), "{err}");
    assert_eq!(downloads(&data), vec!["faces.zip.part".to_string()]);
    assert_eq!(
        std::fs::metadata(data.join(".downloads/faces.zip.part"))
            .unwrap()
            .len(),
        25_000
    );
    assert!(!data.join("faces").exists());

    assert!(matches!(
        fetch_dataset(&ds, &o).unwrap(),
        Action::Installed { .. }
    ));
    assert_installed_files(&data.join("faces"), &files);
    let hits = server.hits();
    assert_eq!((hits[1].range_from, hits[1].status), (Some(25_000), 206));
    assert!(downloads(&data).is_empty());
}

#[test]
fn server_without_range_support_restarts_cleanly() {
    let files = sample_files();
    let zip = make_zip(&files);
    let ds = zip_dataset(&zip, Some(sha256_bytes(&zip)));
    let server = serve_one("faces.zip", zip, RangeSupport::No, 1, 30_000);
    let (_t, data) = temp();
    let o = Options {
        mirror: Some(server.base.clone()),
        ..opts(&data)
    };
    // Appending the full body to the partial file would break the archive checksum.
    assert!(matches!(
        fetch_dataset(&ds, &o).unwrap(),
        Action::Installed { .. }
    ));
    assert_installed_files(&data.join("faces"), &files);
    let hits = server.hits();
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert_eq!((hits[1].range_from, hits[1].status), (Some(30_000), 200));
}

#[test]
fn archive_checksum_mismatch_names_file_and_digests_and_leaves_nothing() {
    let files = sample_files();
    let zip = make_zip(&files);
    let real = sha256_bytes(&zip);
    let wrong = sha256_bytes(b"something else");
    let ds = zip_dataset(&zip, Some(wrong.clone()));
    let server = serve_one("faces.zip", zip, RangeSupport::Yes, 0, 0);
    let (_t, data) = temp();
    let o = Options {
        mirror: Some(server.base.clone()),
        ..opts(&data)
    };
    let err = format!("{:#}", fetch_dataset(&ds, &o).unwrap_err());
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(err.contains("faces.zip"), "{err}");
    assert!(err.contains(&wrong) && err.contains(&real), "{err}");
    assert!(err.contains("deleted the bad archive"), "{err}");
    assert!(downloads(&data).is_empty(), "{:?}", downloads(&data));
    assert_data_dir_holds(&data, &[".downloads"]);
}

#[test]
fn content_mismatch_without_archive_checksum_leaves_nothing() {
    let mut files = sample_files();
    let zip = make_zip(&files);
    // The catalogue expects different content (one byte changed).
    files[2].1 = b"hellO\n".to_vec();
    let bytes = files.iter().map(|(_, d)| d.len() as u64).sum();
    let ds = dataset(
        "faces",
        &manifest_of(&files),
        bytes,
        Some(ArchiveSpec {
            kind: "zip",
            file: "faces.zip",
            sha256: None,
            unpacked: "content",
            required: &[],
        }),
    );
    let server = serve_one("faces.zip", zip, RangeSupport::Yes, 0, 0);
    let (_t, data) = temp();
    let o = Options {
        mirror: Some(server.base.clone()),
        ..opts(&data)
    };
    let err = format!("{:#}", fetch_dataset(&ds, &o).unwrap_err());
    assert!(err.contains("does not match datasets.toml"), "{err}");
    assert!(err.contains(&ds.content.digest), "{err}");
    assert!(downloads(&data).is_empty());
    assert_data_dir_holds(&data, &[".downloads"]);
}

#[test]
fn unreachable_server_gives_a_clear_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let files = sample_files();
    let zip = make_zip(&files);
    let ds = zip_dataset(&zip, None);
    let (_t, data) = temp();
    let o = Options {
        mirror: Some(format!("http://127.0.0.1:{port}")),
        ..opts(&data)
    };
    let err = format!("{:#}", fetch_dataset(&ds, &o).unwrap_err());
    assert!(
        err.contains(&format!("could not reach 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.contains("no internet? use --from DIR"), "{err}");
    assert!(!data.join("faces").exists());
}

#[test]
fn unknown_host_gives_a_clear_error() {
    let files = sample_files();
    let zip = make_zip(&files);
    let ds = zip_dataset(&zip, None);
    let (_t, data) = temp();
    let o = Options {
        // `.invalid` never resolves (RFC 2606).
        mirror: Some("http://kp-no-such-host.invalid".to_string()),
        ..opts(&data)
    };
    let err = format!("{:#}", fetch_dataset(&ds, &o).unwrap_err());
    assert!(
        err.contains("could not reach kp-no-such-host.invalid"),
        "{err}"
    );
    assert!(err.contains("use --from DIR"), "{err}");
}

#[test]
fn http_error_status_is_reported() {
    let files = sample_files();
    let zip = make_zip(&files);
    let ds = zip_dataset(&zip, None);
    let server = serve_one("other.zip", zip, RangeSupport::Yes, 0, 0);
    let (_t, data) = temp();
    let o = Options {
        mirror: Some(server.base.clone()),
        ..opts(&data)
    };
    let err = format!("{:#}", fetch_dataset(&ds, &o).unwrap_err());
    assert!(err.contains("HTTP 404"), "{err}");
}

#[test]
fn zip_entries_escaping_the_destination_are_refused() {
    for bad in ["../evil.txt", "sub/../../evil.txt", "/evil.txt"] {
        let mut files = sample_files();
        files.push((bad.to_string(), b"owned".to_vec()));
        let zip = make_zip(&files);
        let ds = zip_dataset(&zip, None);
        let server = serve_one("faces.zip", zip, RangeSupport::Yes, 0, 0);
        let (t, data) = temp();
        let o = Options {
            mirror: Some(server.base.clone()),
            ..opts(&data)
        };
        let err = format!("{:#}", fetch_dataset(&ds, &o).unwrap_err());
        assert!(
            err.contains("refusing zip entry") && err.contains("escape"),
            "{bad}: {err}"
        );
        assert!(!t.path().join("evil.txt").exists() && !data.join("evil.txt").exists());
        assert_data_dir_holds(&data, &[".downloads"]);
        assert!(downloads(&data).is_empty(), "bad archive kept");
    }
}

#[test]
fn tar_entries_escaping_the_destination_or_links_are_refused() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            make_tar_gz(&[
                TarItem::File("ds/a.txt", b"a"),
                TarItem::File("../evil.txt", b"x"),
            ]),
            "escape",
        ),
        (
            make_tar_gz(&[TarItem::File("ds/../../evil.txt", b"x")]),
            "escape",
        ),
        (
            make_tar_gz(&[TarItem::File("/tmp/kp-evil.txt", b"x")]),
            "absolute",
        ),
        (
            make_tar_gz(&[
                TarItem::Symlink("ds/link", "/etc"),
                TarItem::File("ds/link/x", b"x"),
            ]),
            "links are not allowed",
        ),
    ];
    for (i, (tgz, why)) in cases.into_iter().enumerate() {
        let ds = dataset(
            "ds",
            &Manifest::default(),
            0,
            Some(ArchiveSpec {
                kind: "tar.gz",
                file: "ds.tar.gz",
                sha256: None,
                unpacked: "required-files",
                required: &["a.txt"],
            }),
        );
        let server = serve_one("ds.tar.gz", tgz, RangeSupport::Yes, 0, 0);
        let (t, data) = temp();
        let o = Options {
            mirror: Some(server.base.clone()),
            ..opts(&data)
        };
        let err = format!("{:#}", fetch_dataset(&ds, &o).unwrap_err());
        assert!(
            err.contains("refusing tar entry") && err.contains(why),
            "case {i}: {err}"
        );
        assert!(!t.path().join("evil.txt").exists());
        assert_data_dir_holds(&data, &[".downloads"]);
    }
}

#[test]
fn tar_gz_with_top_folder_and_required_files() {
    let img = noise(5000, 7);
    let tgz = make_tar_gz(&[
        TarItem::Dir("ds/"),
        TarItem::File("ds/labels.xml", b"<dataset/>"),
        TarItem::Dir("ds/imgs/"),
        TarItem::File("ds/imgs/1.jpg", &img),
    ]);
    let spec = || ArchiveSpec {
        kind: "tar.gz",
        file: "ds.tar.gz",
        sha256: None,
        unpacked: "required-files",
        required: &["labels.xml", "imgs"],
    };
    // The catalogue's content digest describes some other (local) variant of the folder.
    let ds = dataset("ds", &Manifest::default(), 0, Some(spec()));
    let server = serve_one("ds.tar.gz", tgz, RangeSupport::Yes, 0, 0);
    let (_t, data) = temp();
    let o = Options {
        mirror: Some(server.base.clone()),
        ..opts(&data)
    };
    match fetch_dataset(&ds, &o).unwrap() {
        Action::Installed { verified, .. } => {
            assert_eq!(verified.trust, Trust::RecordedAtInstall);
            assert_eq!(verified.files, 2);
        }
        other => panic!("{other:?}"),
    }
    let dir = data.join("ds");
    assert_eq!(
        std::fs::read(dir.join("labels.xml")).unwrap(),
        b"<dataset/>"
    );
    assert_eq!(std::fs::read(dir.join("imgs/1.jpg")).unwrap(), img);
    match fetch_dataset(&ds, &o).unwrap() {
        Action::Present(v) => assert_eq!(v.trust, Trust::RecordedAtInstall),
        other => panic!("{other:?}"),
    }
    // Later corruption is still detected by the recorded manifest.
    std::fs::write(dir.join("imgs/1.jpg"), b"truncated").unwrap();
    match check_installed(&ds, &dir, &o) {
        State::Broken(e) => assert!(format!("{e:#}").contains("1.jpg"), "{e:#}"),
        other => panic!("{other:?}"),
    }

    // An archive without the required layout is refused.
    let tgz = make_tar_gz(&[TarItem::File("ds/labels.xml", b"<dataset/>")]);
    let server = serve_one("ds.tar.gz", tgz, RangeSupport::Yes, 0, 0);
    let (_t2, data2) = temp();
    let o2 = Options {
        mirror: Some(server.base.clone()),
        ..opts(&data2)
    };
    let err = format!("{:#}", fetch_dataset(&ds, &o2).unwrap_err());
    assert!(err.contains("missing imgs"), "{err}");
    assert_data_dir_holds(&data2, &[".downloads"]);
}

// ---------------------------------------------------------------- --from

/// `root/<name>/` with the files and a `sha256sum`-style manifest (unsorted, as written by hand).
fn local_source(root: &Path, name: &str, files: &[(String, Vec<u8>)]) -> PathBuf {
    let dir = root.join(name);
    let mut lines = String::new();
    for (p, d) in files.iter().rev() {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, d).unwrap();
        lines.push_str(&format!("{}  {p}\n", sha256_bytes(d)));
    }
    std::fs::write(dir.join(MANIFEST), lines).unwrap();
    dir
}

fn local_dataset(files: &[(String, Vec<u8>)]) -> Dataset {
    let bytes = files.iter().map(|(_, d)| d.len() as u64).sum();
    dataset("faces", &manifest_of(files), bytes, None)
}

#[test]
fn from_folder_copies_and_verifies() {
    let files = sample_files();
    let ds = local_dataset(&files);
    let (t, data) = temp();
    local_source(&t.path().join("src"), "faces", &files);
    let o = Options {
        from: Some(t.path().join("src")),
        ..opts(&data)
    };
    match fetch_dataset(&ds, &o).unwrap() {
        Action::Installed { verified, .. } => assert_eq!(verified.files, 3),
        other => panic!("{other:?}"),
    }
    assert_installed_files(&data.join("faces"), &files);
    assert_data_dir_holds(&data, &["faces"]);
    assert!(matches!(
        fetch_dataset(&ds, &o).unwrap(),
        Action::Present(_)
    ));

    // A corrupted installed copy is detected, named, and replaced on the next run.
    std::fs::write(data.join("faces/01-1m.asf"), b"edited").unwrap();
    match check_installed(&ds, &data.join("faces"), &o) {
        State::Broken(e) => {
            let e = format!("{e:#}");
            assert!(
                e.contains("01-1m.asf") && e.contains(&sha256_bytes(b"edited")),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        fetch_dataset(&ds, &o).unwrap(),
        Action::Installed { .. }
    ));
    assert_installed_files(&data.join("faces"), &files);
}

#[test]
fn from_folder_detects_a_corrupted_file() {
    let files = sample_files();
    let ds = local_dataset(&files);
    let (t, data) = temp();
    let src = local_source(&t.path().join("src"), "faces", &files);
    let mut bad = files[1].1.clone();
    bad[1000] ^= 0x55;
    std::fs::write(src.join("01-1m.jpg"), &bad).unwrap();
    let o = Options {
        from: Some(t.path().join("src")),
        ..opts(&data)
    };
    let err = format!("{:#}", fetch_dataset(&ds, &o).unwrap_err());
    assert!(
        err.contains(&src.join("01-1m.jpg").display().to_string()),
        "{err}"
    );
    assert!(err.contains(&sha256_bytes(&files[1].1)), "{err}");
    assert!(err.contains(&sha256_bytes(&bad)), "{err}");
    assert_data_dir_holds(&data, &[]);
}

#[test]
fn from_folder_with_a_different_manifest_is_refused() {
    let files = sample_files();
    let ds = local_dataset(&files);
    let (t, data) = temp();
    // Consistent folder + manifest, but not the dataset the catalogue describes.
    let mut other = files.clone();
    other.push(("extra.txt".to_string(), b"x".to_vec()));
    local_source(&t.path().join("src"), "faces", &other);
    let o = Options {
        from: Some(t.path().join("src")),
        ..opts(&data)
    };
    let err = format!("{:#}", fetch_dataset(&ds, &o).unwrap_err());
    assert!(err.contains("does not hold the expected `faces`"), "{err}");
    assert!(err.contains(&ds.content.digest), "{err}");
    assert_data_dir_holds(&data, &[]);
}

#[test]
fn from_folder_without_the_dataset_says_what_is_missing() {
    let ds = local_dataset(&sample_files());
    let (t, data) = temp();
    std::fs::create_dir_all(t.path().join("src")).unwrap();
    let o = Options {
        from: Some(t.path().join("src")),
        ..opts(&data)
    };
    let err = format!("{:#}", fetch_dataset(&ds, &o).unwrap_err());
    assert!(
        err.contains("has no `faces/` folder") && err.contains("made by the test"),
        "{err}"
    );
}

#[test]
fn from_folder_accepts_the_official_archive_and_never_deletes_it() {
    let files = sample_files();
    let zip = make_zip(&files);
    let (t, data) = temp();
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("faces.zip"), &zip).unwrap();
    let o = Options {
        from: Some(src.clone()),
        ..opts(&data)
    };
    let ds = zip_dataset(&zip, Some(sha256_bytes(&zip)));
    match fetch_dataset(&ds, &o).unwrap() {
        Action::Installed { from, .. } => assert!(from.ends_with("faces.zip"), "{from}"),
        other => panic!("{other:?}"),
    }
    assert_installed_files(&data.join("faces"), &files);

    // A user's archive that fails the checksum is reported but left alone.
    let (_t2, data2) = temp();
    let bad = zip_dataset(&zip, Some(sha256_bytes(b"nope")));
    let o2 = Options {
        from: Some(src.clone()),
        ..opts(&data2)
    };
    let err = format!("{:#}", fetch_dataset(&bad, &o2).unwrap_err());
    assert!(
        err.contains("checksum mismatch") && !err.contains("deleted"),
        "{err}"
    );
    assert!(src.join("faces.zip").is_file());
}

#[test]
fn local_only_dataset_without_from_explains_where_it_comes_from() {
    let ds = local_dataset(&sample_files());
    let (_t, data) = temp();
    let err = format!("{:#}", fetch_dataset(&ds, &opts(&data)).unwrap_err());
    assert!(err.contains("local-only (no official archive"), "{err}");
    assert!(err.contains("made by the test"), "{err}");
    assert!(err.contains("--from DIR"), "{err}");
}

// ---------------------------------------------------------------- pieces

#[test]
fn safe_relative_paths() {
    assert_eq!(
        safe_relative_path("a/b.txt").unwrap(),
        Some(PathBuf::from("a/b.txt"))
    );
    assert_eq!(
        safe_relative_path("./a//b/").unwrap(),
        Some(PathBuf::from("a/b"))
    );
    assert_eq!(
        safe_relative_path("a\\b").unwrap(),
        Some(PathBuf::from("a/b"))
    );
    assert_eq!(safe_relative_path("./").unwrap(), None);
    for bad in [
        "",
        "../a",
        "a/../../b",
        "a/..",
        "/etc/passwd",
        "\\x",
        "C:\\x",
        "C:x",
        "a\0b",
    ] {
        assert!(safe_relative_path(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn manifest_digest_matches_the_documented_shell_recipe() {
    // The same three lines written with two spaces, piped through
    // `LC_ALL=C sort -k2 | sha256sum`, give this digest (`*` marks binary mode in sha256sum).
    let text = "\
2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824  b/z.txt
486ea46224d1bb4fb680f34f7c9ad96a8f24ec88be73ea8e5a6c65260e9cb8a7  a.txt
fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9 *b/a b.txt
";
    let m = Manifest::parse(text, Path::new("MANIFEST.sha256")).unwrap();
    assert_eq!(
        m.to_text(),
        "486ea46224d1bb4fb680f34f7c9ad96a8f24ec88be73ea8e5a6c65260e9cb8a7  a.txt\n\
         fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9  b/a b.txt\n\
         2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824  b/z.txt\n"
    );
    assert_eq!(
        m.digest(),
        "38e2c66056edb2f47bc0875c8d3547e6463d497bcf01233359dbf5697f3058a4"
    );
}

#[test]
fn manifest_parsing_rejects_bad_lines() {
    let h = "486ea46224d1bb4fb680f34f7c9ad96a8f24ec88be73ea8e5a6c65260e9cb8a7";
    for (text, needle) in [
        (format!("{h}  ../x\n"), "escape"),
        (format!("{h}  /x\n"), "absolute"),
        (format!("{}  x\n", &h[1..]), "not a lowercase sha256"),
        (
            format!("{}  x\n", h.to_uppercase()),
            "not a lowercase sha256",
        ),
        (format!("{h}  x\n{h}  x\n"), "listed twice"),
        (format!("{h}x\n"), "expected"),
    ] {
        let err = format!("{:#}", Manifest::parse(&text, Path::new("M")).unwrap_err());
        assert!(err.contains(needle), "{text:?}: {err}");
        assert!(err.contains("M:"), "no line number: {err}");
    }
}

#[test]
fn catalogue_validation() {
    let ok = "schema = 1\n[[dataset]]\nname=\"a\"\nfolder=\"a\"\ndescription=\"\"\nsource=\"\"\nlicence=\"\"\ncitation=\"\"\n\
              [dataset.content]\ndigest=\"486ea46224d1bb4fb680f34f7c9ad96a8f24ec88be73ea8e5a6c65260e9cb8a7\"\nfiles=1\nbytes=1\n";
    let cfg = Config::parse(ok).unwrap();
    assert!(cfg.select(&["a".to_string()]).is_ok());
    let err = format!("{:#}", cfg.select(&["nope".to_string()]).unwrap_err());
    assert!(
        err.contains("unknown dataset `nope`") && err.contains("known: a"),
        "{err}"
    );
    for (bad, needle) in [
        (ok.replace("folder=\"a\"", "folder=\"../a\""), "plain folder name"),
        (ok.replace("digest=\"486e", "digest=\"X86e"), "64 lowercase hex"),
        (ok.replace("schema = 1", "schema = 2"), "unsupported schema"),
        (format!("{ok}[dataset.archive]\nkind=\"rar\"\nfile=\"a.rar\"\nurls=[\"http://x/a\"]\nunpacked=\"content\"\n"), "rar"),
        (format!("{ok}[dataset.archive]\nkind=\"zip\"\nfile=\"a.zip\"\nurls=[]\nunpacked=\"content\"\n"), "urls is empty"),
        (format!("{ok}[dataset.archive]\nkind=\"zip\"\nfile=\"a.zip\"\nurls=[\"ftp://x\"]\nunpacked=\"content\"\n"), "not http"),
        (format!("{ok}[dataset.archive]\nkind=\"zip\"\nfile=\"a.zip\"\nurls=[\"http://x\"]\nunpacked=\"required-files\"\n"), "non-empty archive.required"),
        (format!("{ok}{}", &ok[10..]), "duplicate dataset name"),
        (ok.replace("citation", "citatoin"), "unknown field"),
    ] {
        let err = format!("{:#}", Config::parse(&bad).unwrap_err());
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn the_workspace_catalogue_is_valid_and_complete() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/datasets.toml");
    let cfg = Config::load(&path).unwrap();
    let names: Vec<&str> = cfg.datasets.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "imm_face_db",
            "ibug_300W_large_face_landmark_dataset",
            "ibug_300w_train_crops",
            "dlib_examples_faces",
            "ibug_300w_pts_samples"
        ]
    );
    let imm = &cfg.datasets[0];
    let a = imm.archive.as_ref().unwrap();
    assert_eq!(a.kind, super::config::ArchiveKind::Zip);
    assert_eq!(
        a.urls[0],
        "http://www2.imm.dtu.dk/~aam/datasets/imm_face_db.zip"
    );
    assert_eq!(a.unpacked, super::config::Unpacked::Content);
    assert_eq!(imm.content.files, 481);
    let w300 = &cfg.datasets[1];
    let a = w300.archive.as_ref().unwrap();
    assert_eq!(a.kind, super::config::ArchiveKind::TarGz);
    assert_eq!(
        a.urls[0],
        "http://dlib.net/files/data/ibug_300W_large_face_landmark_dataset.tar.gz"
    );
    assert_eq!(a.unpacked, super::config::Unpacked::RequiredFiles);
    for d in &cfg.datasets[2..] {
        assert!(d.archive.is_none(), "{} should be local-only", d.name);
        assert!(d.local_only_message().contains("--from"));
    }
}
