//! 300-W `.pts` landmark files.
//!
//! With header: `version: 1`, `n_points: 68`, `{`, one `x y` line per point, `}`.
//! Without header: only the `x y` lines. Values are 1-based (MATLAB convention); this module
//! subtracts 1 so that points follow kp's 0-based pixel-centre convention.
//! The image is the file beside the `.pts` with the same stem and a `.jpg`, `.png` or `.jpeg`
//! extension.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::face::{Dataset, Face};
use crate::geometry::Point;
use crate::loading::image_dimensions;
use crate::scheme::IBUG68;

/// Image extensions looked for beside a `.pts` file, in this order.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "png", "jpeg"];

/// Largest coordinate accepted (as in dlib XML): no image kp reads is larger, and any scaling
/// of a larger finite value could overflow to infinity.
pub const MAX_COORD: f32 = 65_536.0;

fn coord(s: &str, what: &str, path: &Path, line: usize) -> Result<f32> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() && v.abs() <= MAX_COORD => Ok(v - 1.0),
        Ok(v) if v.is_finite() => Err(Error::parse(
            path,
            line,
            format!("{what} = {s} is out of range (|coordinate| > {MAX_COORD})"),
        )),
        _ => Err(Error::parse(
            path,
            line,
            format!("{what} `{s}` is not a finite number"),
        )),
    }
}

/// Parses `.pts` text into 0-based points; `path` is only used in error messages.
pub fn parse_pts(text: &str, path: &Path) -> Result<Vec<Point>> {
    // A UTF-8 byte-order mark (editors on Windows write one) is not part of the first line.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let last_line = text.lines().count().max(1);
    let mut declared: Option<usize> = None;
    let mut header = false;
    let mut open = false; // inside `{ ... }`
    let mut closed = false;
    let mut points = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let ln = i + 1;
        let l = raw.trim();
        if l.is_empty() {
            continue;
        }
        if closed {
            return Err(Error::parse(
                path,
                ln,
                format!("unexpected `{l}` after `}}`"),
            ));
        }
        if !open && points.is_empty() {
            if let Some((key, value)) = l.split_once(':') {
                header = true;
                match key.trim() {
                    "version" => {}
                    "n_points" => {
                        let v = value.trim();
                        declared = Some(v.parse().map_err(|_| {
                            Error::parse(path, ln, format!("n_points `{v}` is not a whole number"))
                        })?);
                    }
                    other => {
                        return Err(Error::parse(path, ln, format!("unknown header `{other}`")))
                    }
                }
                continue;
            }
            if l == "{" {
                header = true;
                open = true;
                continue;
            }
            if header {
                return Err(Error::parse(
                    path,
                    ln,
                    format!("expected `{{`, found `{l}`"),
                ));
            }
        }
        if l == "}" {
            if !open {
                return Err(Error::parse(path, ln, "`}` without `{`"));
            }
            open = false;
            closed = true;
            if let Some(n) = declared.filter(|&n| n != points.len()) {
                return Err(Error::parse(
                    path,
                    ln,
                    format!("n_points says {n}, found {} point lines", points.len()),
                ));
            }
            continue;
        }
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() != 2 {
            return Err(Error::parse(
                path,
                ln,
                format!("expected `x y`, found {} fields in `{l}`", f.len()),
            ));
        }
        points.push(Point::new(
            coord(f[0], "x", path, ln)?,
            coord(f[1], "y", path, ln)?,
        ));
    }
    if open {
        return Err(Error::parse(
            path,
            last_line,
            format!("no closing `}}` after {} points (truncated?)", points.len()),
        ));
    }
    if header && !closed {
        return Err(Error::parse(
            path,
            last_line,
            "header without `{ ... }` block",
        ));
    }
    if points.is_empty() {
        return Err(Error::parse(path, last_line, "no points"));
    }
    Ok(points)
}

/// Reads a `.pts` file into 0-based points.
pub fn read_pts(path: &Path) -> Result<Vec<Point>> {
    let bytes = kp_fs::read_limited(path, kp_fs::MAX_TEXT_BYTES).map_err(|e| Error::io(path, e))?;
    parse_pts(&String::from_utf8_lossy(&bytes), path)
}

/// The image beside a `.pts` file (same stem, first of [`IMAGE_EXTENSIONS`] that exists).
pub fn pts_image(pts: &Path) -> Result<PathBuf> {
    IMAGE_EXTENSIONS
        .iter()
        .map(|e| pts.with_extension(e))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::MissingImage {
            annotation: pts.to_path_buf(),
            image: pts.with_extension("{jpg,png,jpeg}"),
        })
}

/// Reads one 300-W face: 68 points, its image beside it, the image size from its header.
pub fn load_pts_face(path: &Path) -> Result<Face> {
    let points = read_pts(path)?;
    if points.len() != IBUG68.num_points {
        return Err(Error::PointCount {
            path: path.to_path_buf(),
            expected: IBUG68.num_points,
            found: points.len(),
        });
    }
    let image = pts_image(path)?;
    let root = path.parent().unwrap_or(Path::new(""));
    if let Some(name) = image.file_name() {
        crate::confine::check_inside(root, Path::new(name)).map_err(|why| {
            Error::InvalidArgument(format!("{}: the image beside it {why}", path.display()))
        })?;
    }
    let size = image_dimensions(&image)?;
    let mut face = Face::new(image, points);
    face.image_size = Some(size);
    Ok(face)
}

/// Folders deeper than this below the walk's root are an error (a tree that deep is not a
/// dataset).
const MAX_WALK_DEPTH: usize = 64;

/// The walk's memory: every folder and file already seen, by canonical path, so a link back up
/// the tree ends instead of looping and a face reachable twice (a link beside its target) is
/// counted once.
#[derive(Default)]
struct Seen {
    dirs: std::collections::HashSet<PathBuf>,
    files: std::collections::HashSet<PathBuf>,
}

fn walk(dir: &Path, depth: usize, seen: &mut Seen, out: &mut Vec<PathBuf>) -> Result<()> {
    if depth > MAX_WALK_DEPTH {
        return Err(Error::io(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("folders nested more than {MAX_WALK_DEPTH} deep"),
            ),
        ));
    }
    let canonical = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
    if !seen.dirs.insert(canonical) {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| Error::io(dir, e)))
        .collect::<Result<_>>()?;
    // Sorted, so that of two paths to one file the first in order is the one kept.
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, depth + 1, seen, out)?;
        } else if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("pts")) {
            let canonical = std::fs::canonicalize(&p).map_err(|e| Error::io(&p, e))?;
            if seen.files.insert(canonical) {
                out.push(p);
            }
        }
    }
    Ok(())
}

/// The `.pts` files under `dir` (recursively, each file once however many links lead to it,
/// folder links followed but never in a loop), sorted by path.
pub fn pts_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    walk(dir, 0, &mut Seen::default(), &mut out)?;
    out.sort();
    Ok(out)
}

/// Loads every `.pts` face under `dir` (recursively, in parallel), sorted by path.
pub fn load_pts_dir(dir: &Path) -> Result<Dataset> {
    load_pts_dir_with(dir, false).map(|(d, _)| d)
}

/// Like [`load_pts_dir`], but `.pts` files that fail to load are left out; returns the dataset
/// and one error per file left out.
pub fn load_pts_dir_skipping_bad(dir: &Path) -> Result<(Dataset, Vec<Error>)> {
    load_pts_dir_with(dir, true)
}

pub(crate) fn load_pts_dir_with(dir: &Path, skip_bad: bool) -> Result<(Dataset, Vec<Error>)> {
    let files = pts_files(dir)?;
    if files.is_empty() {
        return Err(Error::UnknownFormat {
            path: dir.to_path_buf(),
            message: "no .pts files under this folder".into(),
        });
    }
    let (faces, skipped) = crate::skip::load_files(&files, load_pts_face, skip_bad)?;
    Ok((pts_dataset(dir, faces), skipped))
}

fn pts_dataset(dir: &Path, faces: Vec<Face>) -> Dataset {
    let name = dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pts".into());
    Dataset {
        name,
        scheme: Some(&IBUG68),
        faces,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// 68 points `(i+1, 2i+1)` (1-based) with or without the header.
    pub(crate) fn pts_text(n: usize, header: bool) -> String {
        let mut s = String::new();
        if header {
            s += &format!("version: 1\nn_points:  {n}\n{{\n");
        }
        for i in 0..n {
            s += &format!("{}.5 {}\n", i + 1, 2 * i + 1);
        }
        if header {
            s += "}\n";
        }
        s
    }

    #[test]
    fn with_and_without_header_subtract_one() {
        for header in [true, false] {
            let p = parse_pts(&pts_text(68, header), Path::new("a.pts")).unwrap();
            assert_eq!(p.len(), 68);
            assert_eq!(p[0], Point::new(0.5, 0.0));
            assert_eq!(p[67], Point::new(67.5, 134.0));
            // The same file with a UTF-8 byte-order mark reads the same.
            let bom = format!("\u{feff}{}", pts_text(68, header));
            assert_eq!(parse_pts(&bom, Path::new("a.pts")).unwrap(), p);
        }
    }

    #[test]
    fn count_mismatch_names_the_closing_line() {
        let t = pts_text(68, true).replace("n_points:  68", "n_points:  67");
        let e = parse_pts(&t, Path::new("a.pts")).unwrap_err();
        assert!(matches!(e, Error::Parse { line: 72, .. }), "{e}");
        assert!(e.to_string().contains("n_points says 67, found 68"), "{e}");
    }

    #[test]
    fn malformed_files_name_the_line() {
        let path = Path::new("d/a.pts");
        let cases = [
            (
                pts_text(68, true).replace("5.5 9\n", "5.5 nine\n"),
                8,
                "`nine`",
            ),
            (
                pts_text(68, true).replace("5.5 9\n", "5.5\n"),
                8,
                "expected `x y`",
            ),
            (pts_text(68, true).replace("}\n", ""), 71, "truncated"),
            (pts_text(68, true).replace("{\n", ""), 3, "expected `{`"),
            (
                pts_text(68, true).replace("version", "colour"),
                1,
                "unknown header",
            ),
            (pts_text(68, true) + "1 2\n", 73, "after `}`"),
            (String::new(), 1, "no points"),
        ];
        for (text, line, what) in cases {
            let e = parse_pts(&text, path).unwrap_err();
            let s = e.to_string();
            assert!(s.starts_with(&format!("d/a.pts:{line}:")), "{s}");
            assert!(s.contains(what), "{s}");
        }
    }

    #[test]
    fn load_dir_finds_images_and_checks_count() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("lfpw/testset");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("b.pts"), pts_text(68, true)).unwrap();
        image::RgbImage::new(100, 150)
            .save(sub.join("b.png"))
            .unwrap();
        std::fs::write(dir.path().join("a.pts"), pts_text(68, false)).unwrap();
        image::RgbImage::new(80, 70)
            .save(dir.path().join("a.jpeg"))
            .unwrap();
        let d = load_pts_dir(dir.path()).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d.faces[0].image, dir.path().join("a.jpeg"));
        assert_eq!(d.faces[0].image_size, Some((80, 70)));
        assert_eq!(d.faces[1].image_size, Some((100, 150)));
        assert_eq!(d.scheme, Some(&IBUG68));

        std::fs::remove_file(sub.join("b.png")).unwrap();
        let e = load_pts_dir(dir.path()).unwrap_err();
        assert!(matches!(e, Error::MissingImage { .. }), "{e}");
        assert!(e.to_string().contains("b.pts"), "{e}");

        std::fs::write(dir.path().join("a.pts"), pts_text(67, true)).unwrap();
        let e = load_pts_face(&dir.path().join("a.pts")).unwrap_err();
        assert!(
            matches!(
                e,
                Error::PointCount {
                    expected: 68,
                    found: 67,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("a.pts"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn a_walk_counts_each_face_once_and_ends_on_a_link_back_up_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        let sub = root.join("a");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("face.pts"), "").unwrap();
        // A link to the root inside it (a loop), and a second link to the same folder.
        std::os::unix::fs::symlink(&root, sub.join("loop")).unwrap();
        std::os::unix::fs::symlink(&sub, root.join("b")).unwrap();
        std::os::unix::fs::symlink(sub.join("face.pts"), root.join("same.pts")).unwrap();
        let files = pts_files(&root).unwrap();
        assert_eq!(files, [sub.join("face.pts")], "{files:?}");
    }
}
