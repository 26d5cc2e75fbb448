//! The IMM Face Database: `.asf` shape files (AAM Shape Format) and the `PP-Tg` naming scheme.
//!
//! ASF layout (authors' note, appendix A): `#` comment lines and empty lines are dropped; then one
//! line with the point count `n`, `n` point lines
//! `<path#> <type> <x rel.> <y rel.> <point#> <connects from> <connects to>` (files written in
//! 2002 add three `<user>` columns, so 7 or 10 fields), then the host image's file name.
//! Relative positions are `pixel index / image size`, so pixels are `x_rel * width`,
//! `y_rel * height` of the host image (640x480 for IMM).

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::face::{Dataset, Face, Gender};
use crate::geometry::Point;
use crate::loading::image_dimensions;
use crate::scheme::IMM58;

/// Persons of the standard CS194-26 training split (the rest, 33-40, validate).
pub const IMM_TRAIN_PERSONS: RangeInclusive<u32> = 1..=32;

/// One point line of an `.asf` file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AsfPoint {
    /// The path (contour) the point belongs to.
    pub path: u32,
    /// Bit field: outer/inside, original/artificial, closed/open, non-hole/hole.
    pub kind: u32,
    /// Relative x position (`pixel / width`).
    pub x_rel: f32,
    /// Relative y position (`pixel / height`).
    pub y_rel: f32,
    /// Previous point on the path.
    pub connects_from: u32,
    /// Next point on the path.
    pub connects_to: u32,
}

/// A parsed `.asf` file.
#[derive(Debug, Clone, PartialEq)]
pub struct AsfShape {
    /// The points in file order.
    pub points: Vec<AsfPoint>,
    /// The host image's file name, as written (relative to the `.asf` file's folder).
    pub host_image: String,
}

impl AsfShape {
    /// The points in pixels of an image `width` x `height`.
    pub fn to_pixels(&self, width: u32, height: u32) -> Vec<Point> {
        self.points
            .iter()
            .map(|p| Point::new(p.x_rel * width as f32, p.y_rel * height as f32))
            .collect()
    }
}

/// Metadata encoded in an IMM file name `PP-Tg` (e.g. `01-1m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImmName {
    /// Person number (1-40).
    pub person: u32,
    /// Image type (1-6, see the authors' note).
    pub pose: u32,
    /// Gender letter.
    pub gender: Gender,
}

impl ImmName {
    /// Parses a file stem `PP-Tg`; `None` when it does not follow the pattern.
    pub fn parse(stem: &str) -> Option<ImmName> {
        let (person, rest) = stem.split_once('-')?;
        if person.is_empty() || !person.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let g = rest.chars().last()?;
        let pose = &rest[..rest.len() - g.len_utf8()];
        if pose.is_empty() || !pose.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let gender = match g {
            'f' | 'F' => Gender::Female,
            'm' | 'M' => Gender::Male,
            _ => return None,
        };
        Some(ImmName {
            person: person.parse().ok()?,
            pose: pose.parse().ok()?,
            gender,
        })
    }
}

fn parse_u32(s: &str, what: &str, path: &Path, line: usize) -> Result<u32> {
    s.parse()
        .map_err(|_| Error::parse(path, line, format!("{what} `{s}` is not a whole number")))
}

fn parse_f32(s: &str, what: &str, path: &Path, line: usize) -> Result<f32> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(Error::parse(
            path,
            line,
            format!("{what} `{s}` is not a finite number"),
        )),
    }
}

/// Relative coordinates accepted: the image is [0, 1]; points a little outside it are kept.
const RELATIVE_RANGE: std::ops::RangeInclusive<f32> = -1.0..=2.0;

/// A relative coordinate: finite and within [`RELATIVE_RANGE`] (found by fuzzing: `1e38` is a
/// finite f32 that becomes infinite in pixels).
fn parse_relative(s: &str, what: &str, path: &Path, line: usize) -> Result<f32> {
    let v = parse_f32(s, what, path, line)?;
    if !RELATIVE_RANGE.contains(&v) {
        return Err(Error::parse(
            path,
            line,
            format!(
                "{what} = {s} is not a fraction of the image size (expected {} to {})",
                RELATIVE_RANGE.start(),
                RELATIVE_RANGE.end()
            ),
        ));
    }
    Ok(v)
}

/// Parses the text of an `.asf` file; `path` is only used in error messages.
pub fn parse_asf(text: &str, path: &Path) -> Result<AsfShape> {
    // A UTF-8 byte-order mark (editors on Windows write one) is not part of the first line.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let last_line = text.lines().count().max(1);

    let (count_line, count) = lines
        .next()
        .ok_or_else(|| Error::parse(path, last_line, "no point count line (file is empty)"))?;
    let n: usize = count.parse().map_err(|_| {
        Error::parse(
            path,
            count_line,
            format!("point count `{count}` is not a whole number"),
        )
    })?;

    let mut points = Vec::with_capacity(n.min(10_000));
    let mut last = count_line;
    for k in 0..n {
        let (ln, l) = lines.next().ok_or_else(|| {
            Error::parse(
                path,
                last_line,
                format!("file ends after {k} of {n} point lines (truncated?)"),
            )
        })?;
        last = ln;
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() != 7 && f.len() != 10 {
            return Err(Error::parse(
                path,
                ln,
                format!(
                    "point {k}: expected 7 or 10 fields, found {} in `{l}`",
                    f.len()
                ),
            ));
        }
        let p = AsfPoint {
            path: parse_u32(f[0], "path#", path, ln)?,
            kind: parse_u32(f[1], "type", path, ln)?,
            x_rel: parse_relative(f[2], "x", path, ln)?,
            y_rel: parse_relative(f[3], "y", path, ln)?,
            connects_from: parse_u32(f[5], "connects-from", path, ln)?,
            connects_to: parse_u32(f[6], "connects-to", path, ln)?,
        };
        let number = parse_u32(f[4], "point#", path, ln)?;
        if number as usize != k {
            tracing::warn!(
                "{}:{ln}: point# {number} on the line of point {k}",
                path.display()
            );
        }
        for u in &f[7..] {
            parse_f32(u, "user field", path, ln)?;
        }
        points.push(p);
    }
    let (host_line, host) = lines.next().ok_or_else(|| {
        Error::parse(
            path,
            last.max(last_line),
            format!("no host image line after the {n} points (truncated?)"),
        )
    })?;
    let root = path.parent().unwrap_or(Path::new(""));
    if let Err(why) = crate::confine::check_inside(root, Path::new(host)) {
        return Err(Error::parse(
            path,
            host_line,
            format!("the host image `{host}` {why}"),
        ));
    }
    if let Some((ln, extra)) = lines.next() {
        tracing::warn!("{}:{ln}: ignoring trailing line `{extra}`", path.display());
    }
    Ok(AsfShape {
        points,
        host_image: host.to_owned(),
    })
}

/// Reads and parses an `.asf` file.
pub fn read_asf(path: &Path) -> Result<AsfShape> {
    let bytes = kp_fs::read_limited(path, kp_fs::MAX_TEXT_BYTES).map_err(|e| Error::io(path, e))?;
    parse_asf(&String::from_utf8_lossy(&bytes), path)
}

/// Reads one IMM face: the `.asf` file, its host image's size (from the image header) and the
/// metadata in the file name. The face must have 58 points.
pub fn load_asf_face(path: &Path) -> Result<Face> {
    let shape = read_asf(path)?;
    if shape.points.len() != IMM58.num_points {
        return Err(Error::PointCount {
            path: path.to_path_buf(),
            expected: IMM58.num_points,
            found: shape.points.len(),
        });
    }
    let folder = path.parent().unwrap_or(Path::new(""));
    let image = folder.join(&shape.host_image);
    if !image.is_file() {
        return Err(Error::MissingImage {
            annotation: path.to_path_buf(),
            image,
        });
    }
    let (w, h) = image_dimensions(&image)?;
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(ImmName::parse);
    let mut face = Face::new(image, shape.to_pixels(w, h));
    face.image_size = Some((w, h));
    if let Some(n) = name {
        face.person = Some(n.person);
        face.pose = Some(n.pose);
        face.gender = Some(n.gender);
    }
    Ok(face)
}

/// The `.asf` files directly inside `dir`, sorted by file name.
pub fn asf_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = entry.map_err(|e| Error::io(dir, e))?.path();
        let is_asf = p.extension().is_some_and(|e| e.eq_ignore_ascii_case("asf"));
        if is_asf && p.is_file() {
            files.push(p);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// Loads every `.asf` face in `dir` (in parallel), sorted by file name, as the `imm` dataset.
pub fn load_imm(dir: &Path) -> Result<Dataset> {
    load_imm_with(dir, false).map(|(d, _)| d)
}

/// Like [`load_imm`], but `.asf` files that fail to load (bad text, missing or unreadable
/// image) are left out; returns the dataset and one error per file left out.
pub fn load_imm_skipping_bad(dir: &Path) -> Result<(Dataset, Vec<Error>)> {
    load_imm_with(dir, true)
}

pub(crate) fn load_imm_with(dir: &Path, skip_bad: bool) -> Result<(Dataset, Vec<Error>)> {
    let files = asf_files(dir)?;
    if files.is_empty() {
        return Err(Error::UnknownFormat {
            path: dir.to_path_buf(),
            message: "no .asf files in this folder".into(),
        });
    }
    let (faces, skipped) = crate::skip::load_files(&files, load_asf_face, skip_bad)?;
    Ok((imm_dataset(faces), skipped))
}

fn imm_dataset(faces: Vec<Face>) -> Dataset {
    Dataset {
        name: "imm".into(),
        scheme: Some(&IMM58),
        faces,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid 58-point ASF text (10-column lines when `wide`) naming `host`.
    pub(crate) fn asf_text(host: &str, wide: bool) -> String {
        let mut s = String::from("######\n# AAM Shape File\n######\n\n#\n# number of model points\n#\n58\n\n#\n# model points\n#\n");
        for i in 0..58 {
            let x = 0.2 + 0.01 * i as f32;
            let y = 0.3 + 0.005 * i as f32;
            s += &format!("0 \t4 \t{x:.8} \t{y:.8} \t{i} \t{i} \t{i}");
            if wide {
                s += " \t0.00 \t0.00 \t0.00";
            }
            s.push('\n');
        }
        s += &format!("\n#\n# host image\n#\n{host}\n");
        s
    }

    #[test]
    fn relative_coordinates_far_outside_the_image_are_refused() {
        // Found by `cargo fuzz run asf`: a finite x of 1.1e38 became inf in pixels.
        let big = asf_text("x.jpg", false).replacen(
            "0.20000000",
            "111111111111111111111111111111111111111",
            1,
        );
        let e = parse_asf(&big, Path::new("t.asf")).unwrap_err();
        assert!(matches!(e, Error::Parse { line: 13, .. }), "{e}");
        assert!(e.to_string().contains("fraction of the image"), "{e}");
        let edge = asf_text("x.jpg", false).replacen("0.20000000", "-0.05", 1);
        let shape = parse_asf(&edge, Path::new("t.asf")).unwrap();
        assert!(shape.to_pixels(640, 480).iter().all(|p| p.is_finite()));
    }

    #[test]
    fn parses_7_and_10_column_files() {
        for wide in [false, true] {
            let a = parse_asf(&asf_text("x.jpg", wide), Path::new("t.asf")).unwrap();
            assert_eq!(a.points.len(), 58);
            // The same file with a UTF-8 byte-order mark reads the same.
            let bom = format!("\u{feff}{}", asf_text("x.jpg", wide));
            assert_eq!(parse_asf(&bom, Path::new("t.asf")).unwrap(), a);
            assert_eq!(a.host_image, "x.jpg");
            assert!((a.points[10].x_rel - 0.3).abs() < 1e-6);
            let px = a.to_pixels(640, 480);
            assert!((px[10].x - 0.3 * 640.0).abs() < 1e-3);
            assert!((px[10].y - 0.35 * 480.0).abs() < 1e-3);
        }
    }

    #[test]
    fn crlf_files_parse() {
        let t = asf_text("x.jpg", false).replace('\n', "\r\n");
        assert_eq!(
            parse_asf(&t, Path::new("t.asf")).unwrap().host_image,
            "x.jpg"
        );
    }

    #[test]
    fn truncated_file_names_the_line() {
        let t: String = asf_text("x.jpg", false)
            .lines()
            .take(30)
            .map(|l| format!("{l}\n"))
            .collect();
        let e = parse_asf(&t, Path::new("dir/t.asf")).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Parse { line: 30, .. }), "{msg}");
        assert!(msg.starts_with("dir/t.asf:30:"), "{msg}");
        assert!(msg.contains("truncated"), "{msg}");
    }

    #[test]
    fn a_host_image_outside_the_asf_folder_is_refused_on_its_line() {
        for host in ["../x.jpg", "/etc/passwd"] {
            let e = parse_asf(&asf_text(host, false), Path::new("d/t.asf")).unwrap_err();
            assert!(matches!(e, Error::Parse { .. }), "{e}");
            assert!(
                e.to_string().contains("outside the dataset's folder"),
                "{e}"
            );
        }
        assert!(parse_asf(&asf_text("sub/x.jpg", false), Path::new("d/t.asf")).is_ok());
    }

    #[test]
    fn missing_host_line_is_an_error() {
        let t = asf_text("x.jpg", false).replace("x.jpg\n", "");
        let e = parse_asf(&t, Path::new("t.asf")).unwrap_err();
        assert!(e.to_string().contains("host image"), "{e}");
    }

    #[test]
    fn text_in_a_number_names_the_line_and_field() {
        let t = asf_text("x.jpg", false).replace("0.25000000", "0.2five");
        let e = parse_asf(&t, Path::new("t.asf")).unwrap_err();
        // 12 header lines, so point 5 is on line 18.
        assert!(matches!(e, Error::Parse { line: 18, .. }), "{e}");
        assert!(e.to_string().contains("`0.2five`"), "{e}");
        let t = asf_text("x.jpg", false).replacen("58\n", "fifty-eight\n", 1);
        let e = parse_asf(&t, Path::new("t.asf")).unwrap_err();
        assert!(matches!(e, Error::Parse { line: 8, .. }), "{e}");
    }

    #[test]
    fn wrong_field_count_is_an_error() {
        let t = asf_text("x.jpg", false).replace("\t5 \t5 \t5\n", "\t5\n");
        let e = parse_asf(&t, Path::new("t.asf")).unwrap_err();
        assert!(e.to_string().contains("expected 7 or 10 fields"), "{e}");
    }

    #[test]
    fn imm_names() {
        assert_eq!(
            ImmName::parse("01-1m"),
            Some(ImmName {
                person: 1,
                pose: 1,
                gender: Gender::Male
            })
        );
        assert_eq!(
            ImmName::parse("35-6f").map(|n| (n.person, n.pose, n.gender)),
            Some((35, 6, Gender::Female))
        );
        for bad in ["01-1", "01-xm", "-1m", "011m", "01-1q", "ab-1m", ""] {
            assert_eq!(ImmName::parse(bad), None, "{bad}");
        }
    }
}
