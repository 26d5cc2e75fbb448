//! A corpus of bad inputs, made by the test in temp folders: each one gives a typed error that
//! names the file (and the line or element) through the library, and a one-line message with a
//! non-zero exit code through `kp` — never a panic.

use std::path::{Path, PathBuf};
use std::process::Command;

fn shared(rel: &str) -> PathBuf {
    kp_data::test_data_dir().join(rel)
}

/// `kp ARGS` must fail with one line on stderr that contains every `needles` entry.
fn kp_fails(args: &[&str], needles: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_kp"))
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "kp {args:?} succeeded");
    assert!(!err.contains("panicked"), "kp {args:?} panicked: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "kp {args:?}: not one line: {err}");
    for n in needles {
        assert!(err.contains(n), "kp {args:?}: {err:?} lacks {n:?}");
    }
}

/// The library refuses `path` with a message containing every `needles` entry.
fn load_fails(path: &Path, needles: &[&str]) -> String {
    let e = match kp_data::format::load_dataset(path) {
        Ok(d) => panic!("{} loaded ({} faces)", path.display(), d.len()),
        Err(e) => e.to_string(),
    };
    for n in needles {
        assert!(e.contains(n), "{e:?} lacks {n:?}");
    }
    e
}

/// Both the library and `kp data summary` refuse `path`.
fn both_fail(path: &Path, needles: &[&str]) {
    load_fails(path, needles);
    kp_fails(&["data", "summary", path.to_str().unwrap()], needles);
}

fn write(p: &Path, bytes: impl AsRef<[u8]>) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

fn imm_folder(root: &Path, asf: &str) -> PathBuf {
    let dir = root.join("imm");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(shared("imm_face_db/01-1m.jpg"), dir.join("01-1m.jpg")).unwrap();
    write(&dir.join("01-1m.asf"), asf);
    dir
}

#[test]
fn bad_asf_files() {
    let real = std::fs::read_to_string(shared("imm_face_db/01-1m.asf")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // Truncated in the middle of the point list.
    let cut: String = real.lines().take(40).collect::<Vec<_>>().join("\n");
    let dir = imm_folder(&tmp.path().join("truncated"), &cut);
    both_fail(&dir, &["01-1m.asf"]);
    // Garbled: text where a coordinate should be, on a known line.
    let garbled = real.replacen("0.35763609", "0.35x63609", 1);
    let line = real.lines().position(|l| l.contains("0.35763609")).unwrap() + 1;
    let dir = imm_folder(&tmp.path().join("garbled"), &garbled);
    both_fail(&dir, &["01-1m.asf", &format!(":{line}")]);
    // Binary noise.
    let noise: Vec<u8> = (0..2000u32).map(|i| (i * 131 % 251) as u8).collect();
    let dir = imm_folder(&tmp.path().join("noise"), "");
    write(&dir.join("01-1m.asf"), noise);
    both_fail(&dir, &["01-1m.asf"]);
}

fn pts(n: usize, bad_number: bool) -> String {
    let mut s = format!("version: 1\nn_points: {n}\n{{\n");
    for i in 0..n {
        if bad_number && i == 10 {
            s.push_str("12.5 abc\n");
        } else {
            s.push_str(&format!("{} {}\n", 100 + i, 120 + i));
        }
    }
    s.push_str("}\n");
    s
}

#[test]
fn bad_pts_files() {
    let tmp = tempfile::tempdir().unwrap();
    let jpg = shared("imm_face_db/01-1m.jpg");
    for (name, text, needles) in [
        ("67", pts(67, false), vec!["face.pts", "67"]),
        ("text", pts(68, true), vec!["face.pts", ":14"]),
    ] {
        let dir = tmp.path().join(name);
        write(&dir.join("face.pts"), text);
        std::fs::copy(&jpg, dir.join("face.jpg")).unwrap();
        both_fail(&dir, &needles);
    }
}

fn xml(image: &str, bx: &str, parts: &str) -> String {
    format!(
        "<?xml version='1.0'?>\n<dataset>\n<images>\n  <image file='{image}'>\n    \
         <box {bx}>\n{parts}    </box>\n  </image>\n</images>\n</dataset>\n"
    )
}

fn parts68(x_of_first: &str, dup: bool) -> String {
    (0..68)
        .map(|i| {
            let name = if dup && i == 5 { 4 } else { i };
            let x = if i == 0 {
                x_of_first.to_string()
            } else {
                format!("{}", 200 + i)
            };
            format!("      <part name='{name:02}' x='{x}' y='{}'/>\n", 200 + i)
        })
        .collect()
}

#[test]
fn bad_dlib_xml_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("xml");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(shared("imm_face_db/01-1m.jpg"), dir.join("a.jpg")).unwrap();
    let good_box = "top='150' left='150' width='200' height='200'";
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "missing-attribute",
            xml(
                "a.jpg",
                "left='150' width='200' height='200'",
                &parts68("200", false),
            ),
            vec!["missing-attribute.xml", "box", "top"],
        ),
        (
            "negative-box",
            xml("a.jpg", "top='150' left='150' width='-20' height='200'", ""),
            vec!["negative-box.xml", "box", "width"],
        ),
        (
            "huge-box",
            xml(
                "a.jpg",
                "top='150' left='150' width='90000000' height='200'",
                "",
            ),
            vec!["huge-box.xml", "box"],
        ),
        (
            "part-outside",
            xml(
                "a.jpg' width='640' height='480",
                good_box,
                &parts68("5000", false),
            ),
            vec!["part-outside.xml", "part", "outside"],
        ),
        (
            "duplicate-part",
            xml("a.jpg", good_box, &parts68("200", true)),
            vec!["duplicate-part.xml", "part", "04"],
        ),
        (
            "outside-folder",
            xml("../../../../etc/passwd", good_box, ""),
            vec!["outside-folder.xml", "outside the dataset's folder"],
        ),
        (
            "absolute-outside",
            xml("/etc/passwd", good_box, ""),
            vec!["absolute-outside.xml:", "outside the dataset's folder"],
        ),
        (
            "unclosed",
            xml("a.jpg", good_box, "").replace("</box>", ""),
            vec!["unclosed.xml"],
        ),
        (
            "number-text",
            xml("a.jpg", good_box, &parts68("2x0", false)),
            vec!["number-text.xml", "part"],
        ),
    ];
    for (name, text, needles) in cases {
        let path = dir.join(format!("{name}.xml"));
        write(&path, text);
        both_fail(&path, &needles);
    }
}

#[test]
fn bad_images() {
    let tmp = tempfile::tempdir().unwrap();
    // A JPEG cut in half.
    let jpg = std::fs::read(shared("imm_face_db/01-1m.jpg")).unwrap();
    let cut = tmp.path().join("cut.jpg");
    write(&cut, &jpg[..jpg.len() / 2]);
    // A zero-byte PNG.
    let empty = tmp.path().join("empty.png");
    write(&empty, b"");
    // A PNG header claiming 20000x20000 pixels.
    let mut huge = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    huge.extend_from_slice(&20000u32.to_be_bytes());
    huge.extend_from_slice(&20000u32.to_be_bytes());
    huge.extend_from_slice(&[8, 0, 0, 0, 0]);
    huge.extend_from_slice(&[0, 0, 0, 0]); // CRC (wrong on purpose)
    let big = tmp.path().join("huge.png");
    write(&big, &huge);
    for p in [&cut, &empty, &big] {
        let e = match kp_data::load_gray(p) {
            Ok(_) => panic!("{} decoded", p.display()),
            Err(e) => e,
        };
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(e.to_string().contains(name), "{e}");
    }
    // Through kp: a training folder whose image is cut in half.
    let dir = tmp.path().join("imm");
    std::fs::create_dir_all(&dir).unwrap();
    for face in ["01-1m", "33-1m"] {
        std::fs::copy(
            shared(&format!("imm_face_db/{face}.asf")),
            dir.join(format!("{face}.asf")),
        )
        .unwrap();
    }
    std::fs::copy(shared("imm_face_db/33-1m.jpg"), dir.join("33-1m.jpg")).unwrap();
    write(&dir.join("01-1m.jpg"), &jpg[..jpg.len() / 2]);
    let out = tmp.path().join("run");
    kp_fails(
        &[
            "train",
            "--task",
            "nose",
            "--data",
            dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--epochs",
            "1",
            "--quiet",
        ],
        &["01-1m.jpg"],
    );
}

/// A FIFO (no writer: opening it would block for ever) and a device given where kp reads a
/// photo, a dataset or weights: each is refused in one line, at once, saying what it is.
#[cfg(unix)]
#[test]
fn fifos_and_devices_are_refused_instead_of_hanging_or_reading_without_end() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("photo.jpg");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let xml = dir.path().join("labels.xml");
    std::os::unix::fs::symlink(&fifo, &xml).unwrap();
    let f = fifo.to_str().unwrap();
    kp_fails(
        &["predict", f],
        &["photo.jpg", "is a FIFO, not a regular file"],
    );
    kp_fails(
        &["data", "summary", xml.to_str().unwrap()],
        &["labels.xml", "is a FIFO"],
    );
    kp_fails(&["predict", "/dev/zero"], &["/dev/zero", "is a device"]);
    // A run whose weights file is a FIFO.
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::write(
        run.join("config.json"),
        kp_train::pretrained::ReadyModel::Compact.config_json(),
    )
    .unwrap();
    let weights = run.join("model.safetensors");
    assert!(Command::new("mkfifo")
        .arg(&weights)
        .status()
        .unwrap()
        .success());
    kp_fails(
        &[
            "predict",
            "--run",
            run.to_str().unwrap(),
            &shared("imm_face_db/01-1m.jpg").to_string_lossy(),
        ],
        &["model.safetensors", "is a FIFO"],
    );
}

/// CRC-32 (PNG's) of `bytes`.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A PNG whose valid header claims 12000x12000 grey pixels (144 MP, sides under the side limit)
/// and whose data is missing: refused from the header by the pixel cap, in one line, before any
/// pixel is allocated; a lower `--max-pixels` refuses an ordinary photo the same way.
#[test]
fn images_over_the_pixel_cap_are_refused_before_decoding() {
    let tmp = tempfile::tempdir().unwrap();
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(&body);
        c.extend_from_slice(&crc32(&body).to_be_bytes());
        c
    };
    let mut header = 12000u32.to_be_bytes().to_vec();
    header.extend_from_slice(&12000u32.to_be_bytes());
    header.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &header));
    // The start of a zlib stream: the pixels themselves are missing.
    png.extend(chunk(b"IDAT", &[0x78, 0x9c]));
    png.extend(chunk(b"IEND", &[]));
    let bomb = tmp.path().join("bomb.png");
    write(&bomb, &png);
    assert_eq!(
        kp_data::loading::image_dimensions(&bomb).unwrap(),
        (12000, 12000)
    );
    kp_fails(
        &["predict", bomb.to_str().unwrap()],
        &["bomb.png", "144000000 pixels, above the cap of 64000000"],
    );
    let photo = shared("imm_face_db/01-1m.jpg");
    kp_fails(
        &["predict", "--max-pixels", "100000", photo.to_str().unwrap()],
        &[
            "01-1m.jpg",
            "640x480 is 307200 pixels, above the cap of 100000",
        ],
    );
}

#[test]
fn kp_export_of_a_run_folder_without_weights_names_it_and_writes_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("empty-run");
    std::fs::create_dir_all(&run).unwrap();
    let onnx = dir.path().join("model.onnx");
    let (r, o) = (run.to_str().unwrap(), onnx.to_str().unwrap());
    kp_fails(&["export", "--run", r, "--onnx", o], &["empty-run"]);
    assert!(!onnx.exists());
    // Nor does a file whose folder cannot be written leave anything behind.
    let missing = dir.path().join("no-such-folder/model.onnx");
    kp_fails(
        &["export", "--onnx", missing.to_str().unwrap()],
        &["no-such-folder"],
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn a_training_that_fails_before_writing_leaves_no_empty_run_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("new-run");
    let missing = dir.path().join("no-such-data");
    let (data, run) = (missing.to_str().unwrap(), out.to_str().unwrap());
    let args = ["train", "--task", "nose", "--data", data, "--out", run];
    kp_fails(&args, &["no-such-data"]);
    assert!(!out.exists(), "an empty run folder was left");
    // A folder that was there before stays.
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    kp_fails(&args, &["no-such-data"]);
    assert!(out.join("notes.txt").exists());
}
