//! Recognising a dataset on disk by its layout and loading it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::face::Dataset;
use crate::{dlib_xml, imm, pts};

/// The on-disk dataset layouts kp reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetFormat {
    /// A folder of IMM `.asf` files beside their images.
    ImmAsf,
    /// A dlib image-metadata `.xml` file (or a folder holding exactly one).
    DlibXml,
    /// A 300-W `.pts` file, or a folder searched recursively for them.
    Pts,
    /// An annotation table written by `table::write_csv` (needs the `tables` feature).
    Csv,
}

impl fmt::Display for DatasetFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DatasetFormat::ImmAsf => "imm-asf",
            DatasetFormat::DlibXml => "dlib-xml",
            DatasetFormat::Pts => "pts",
            DatasetFormat::Csv => "csv",
        })
    }
}

fn has_ext(p: &Path, ext: &str) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

/// The files directly in `dir` with extension `ext`, sorted.
fn files_with_ext(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        if p.is_file() && has_ext(&p, ext) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// The dataset file a path stands for: the path itself, or the single `.xml` in a folder.
fn resolve(path: &Path) -> Result<(DatasetFormat, PathBuf)> {
    let unknown = |message: String| Error::UnknownFormat {
        path: path.to_path_buf(),
        message,
    };
    if path.is_file() {
        let format = if has_ext(path, "xml") {
            DatasetFormat::DlibXml
        } else if has_ext(path, "csv") {
            DatasetFormat::Csv
        } else if has_ext(path, "pts") {
            DatasetFormat::Pts
        } else {
            return Err(unknown(
                "not a dataset file (expected .xml, .csv or .pts, or a folder)".into(),
            ));
        };
        return Ok((format, path.to_path_buf()));
    }
    if !path.is_dir() {
        // Missing, or there but neither a file nor a folder (a FIFO, a device): say which.
        let e = match kp_fs::regular_file_len(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => e,
            _ => std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        };
        return Err(Error::io(path, e));
    }
    if !files_with_ext(path, "asf")?.is_empty() {
        return Ok((DatasetFormat::ImmAsf, path.to_path_buf()));
    }
    let xml = files_with_ext(path, "xml")?;
    match xml.len() {
        1 => return Ok((DatasetFormat::DlibXml, xml[0].clone())),
        0 => {}
        _ => {
            let names: Vec<String> = xml
                .iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            return Err(unknown(format!(
                "{} .xml files here ({}); pass one of them",
                xml.len(),
                names.join(", ")
            )));
        }
    }
    if !pts::pts_files(path)?.is_empty() {
        return Ok((DatasetFormat::Pts, path.to_path_buf()));
    }
    Err(unknown(
        "no dataset found: expected .asf files, one .xml file, or .pts files below".into(),
    ))
}

impl DatasetFormat {
    /// Recognises the dataset at `path`: a folder with `.asf` files is IMM; a `.xml` file (or a
    /// folder with exactly one) is dlib XML; a `.csv` file is an annotation table; a `.pts` file
    /// or a folder with `.pts` files below it is 300-W.
    pub fn detect(path: &Path) -> Result<DatasetFormat> {
        resolve(path).map(|(f, _)| f)
    }
}

/// Detects the format of `path` and loads the dataset.
pub fn load_dataset(path: &Path) -> Result<Dataset> {
    load_dataset_with(path, false).map(|(d, _)| d)
}

/// Like [`load_dataset`], but entries that fail to load (a bad `.asf`/`.pts` file, an XML
/// `<image>` with a bad element, a box with bad parts, a missing image) are left out instead of
/// failing the whole dataset; returns the dataset and one error per entry left out (see
/// [`crate::SkipReport`]). A path that is no dataset, broken XML syntax or an unreadable CSV
/// still fail.
pub fn load_dataset_skipping_bad(path: &Path) -> Result<(Dataset, Vec<Error>)> {
    load_dataset_with(path, true)
}

/// [`load_dataset`] when `skip_bad` is false (nothing is ever skipped), otherwise
/// [`load_dataset_skipping_bad`]: for callers that take `--skip-bad` as a flag.
pub fn load_dataset_with(path: &Path, skip_bad: bool) -> Result<(Dataset, Vec<Error>)> {
    let (format, file) = resolve(path)?;
    tracing::debug!("{}: loading as {format}", file.display());
    match format {
        DatasetFormat::ImmAsf => imm::load_imm_with(&file, skip_bad),
        DatasetFormat::DlibXml => dlib_xml::load_dlib_xml_with(&file, skip_bad),
        #[cfg(feature = "tables")]
        DatasetFormat::Csv => crate::table::read_csv(&file).map(|d| (d, Vec::new())),
        #[cfg(not(feature = "tables"))]
        DatasetFormat::Csv => Err(crate::Error::UnknownFormat {
            path: file,
            message: "CSV annotation tables need kp-data's `tables` feature".into(),
        }),
        DatasetFormat::Pts if file.is_file() => Ok((
            Dataset {
                name: file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                scheme: Some(&crate::scheme::IBUG68),
                faces: vec![pts::load_pts_face(&file)?],
            },
            Vec::new(),
        )),
        DatasetFormat::Pts => pts::load_pts_dir_with(&file, skip_bad),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imm::tests::asf_text;
    use crate::pts::tests::pts_text;

    #[test]
    fn detects_each_layout() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["imm", "xml", "pts/deep", "two", "none"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("imm/01-1m.asf"), asf_text("01-1m.jpg", false)).unwrap();
        image::RgbImage::new(64, 48)
            .save(d.join("imm/01-1m.jpg"))
            .unwrap();
        std::fs::write(d.join("xml/l.xml"), "<dataset><images/></dataset>").unwrap();
        std::fs::write(d.join("pts/deep/a.pts"), pts_text(68, true)).unwrap();
        image::RgbImage::new(80, 80)
            .save(d.join("pts/deep/a.png"))
            .unwrap();
        std::fs::write(d.join("two/a.xml"), "").unwrap();
        std::fs::write(d.join("two/b.xml"), "").unwrap();

        assert_eq!(
            DatasetFormat::detect(&d.join("imm")).unwrap(),
            DatasetFormat::ImmAsf
        );
        assert_eq!(
            DatasetFormat::detect(&d.join("xml")).unwrap(),
            DatasetFormat::DlibXml
        );
        assert_eq!(
            DatasetFormat::detect(&d.join("xml/l.xml")).unwrap(),
            DatasetFormat::DlibXml
        );
        assert_eq!(
            DatasetFormat::detect(&d.join("pts")).unwrap(),
            DatasetFormat::Pts
        );
        assert_eq!(
            DatasetFormat::detect(&d.join("pts/deep/a.pts")).unwrap(),
            DatasetFormat::Pts
        );
        let e = DatasetFormat::detect(&d.join("two"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.xml, b.xml"), "{e}");
        let e = DatasetFormat::detect(&d.join("none")).unwrap_err();
        assert!(matches!(e, Error::UnknownFormat { .. }), "{e}");
        let e = DatasetFormat::detect(&d.join("imm/01-1m.jpg")).unwrap_err();
        assert!(e.to_string().contains("01-1m.jpg"), "{e}");
        let e = DatasetFormat::detect(&d.join("nothing")).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");

        let imm = load_dataset(&d.join("imm")).unwrap();
        assert_eq!((imm.name.as_str(), imm.len()), ("imm", 1));
        assert_eq!(imm.faces[0].image_size, Some((64, 48)));
        assert!((imm.faces[0].keypoints[10].x - 0.3 * 64.0).abs() < 1e-4);
        assert_eq!(load_dataset(&d.join("xml")).unwrap().len(), 0);
        assert_eq!(load_dataset(&d.join("pts")).unwrap().len(), 1);
        assert_eq!(load_dataset(&d.join("pts/deep/a.pts")).unwrap().len(), 1);
    }

    #[test]
    fn imm_errors_name_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("01-1m.asf"), asf_text("01-1m.jpg", true)).unwrap();
        // Missing host image.
        let e = load_dataset(d).unwrap_err();
        assert!(matches!(e, Error::MissingImage { .. }), "{e}");
        let s = e.to_string();
        assert!(s.contains("01-1m.asf") && s.contains("01-1m.jpg"), "{s}");
        // Truncated JPEG.
        image::RgbImage::new(64, 48)
            .save(d.join("01-1m.jpg"))
            .unwrap();
        let bytes = std::fs::read(d.join("01-1m.jpg")).unwrap();
        std::fs::write(d.join("01-1m.jpg"), &bytes[..20]).unwrap();
        let e = load_dataset(d).unwrap_err();
        assert!(matches!(e, Error::Image { .. }), "{e}");
        assert!(e.to_string().contains("01-1m.jpg"), "{e}");
        // 57 points.
        image::RgbImage::new(64, 48)
            .save(d.join("01-1m.jpg"))
            .unwrap();
        let t = asf_text("01-1m.jpg", false).replacen("\n58\n", "\n57\n", 1);
        let t = t.replacen("0 \t4 \t0.20000000 \t0.30000000 \t0 \t0 \t0\n", "", 1);
        std::fs::write(d.join("01-1m.asf"), t).unwrap();
        let e = load_dataset(d).unwrap_err();
        assert!(
            matches!(
                e,
                Error::PointCount {
                    expected: 58,
                    found: 57,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("01-1m.asf"), "{e}");
    }

    #[test]
    fn skipping_bad_keeps_the_good_imm_and_pts_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for stem in ["01-1m", "02-1m", "03-1m", "04-1m"] {
            image::RgbImage::new(64, 48)
                .save(d.join(format!("{stem}.jpg")))
                .unwrap();
            std::fs::write(
                d.join(format!("{stem}.asf")),
                asf_text(&format!("{stem}.jpg"), false),
            )
            .unwrap();
        }
        // 02: truncated text; 04: its image is gone.
        let t = asf_text("02-1m.jpg", false);
        std::fs::write(d.join("02-1m.asf"), &t[..t.len() / 2]).unwrap();
        std::fs::remove_file(d.join("04-1m.jpg")).unwrap();
        assert!(load_dataset(d).is_err());
        let (ds, skipped) = load_dataset_skipping_bad(d).unwrap();
        let names: Vec<_> = ds
            .faces
            .iter()
            .map(|f| f.image.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["01-1m.jpg", "03-1m.jpg"]);
        assert_eq!(skipped.len(), 2);
        let report = crate::SkipReport::new(&skipped);
        assert!(
            report.messages.iter().any(|m| m.contains("02-1m.asf")),
            "{report:?}"
        );
        assert!(
            report.messages.iter().any(|m| m.contains("04-1m")),
            "{report:?}"
        );

        let p = tempfile::tempdir().unwrap();
        for (i, n) in [68, 67, 68].into_iter().enumerate() {
            std::fs::write(p.path().join(format!("{i}.pts")), pts_text(n, true)).unwrap();
            image::RgbImage::new(200, 200)
                .save(p.path().join(format!("{i}.png")))
                .unwrap();
        }
        assert!(load_dataset(p.path()).is_err());
        let (ds, skipped) = load_dataset_skipping_bad(p.path()).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(skipped.len(), 1);
        assert!(
            matches!(skipped[0], Error::PointCount { found: 67, .. }),
            "{}",
            skipped[0]
        );
    }

    #[test]
    fn skipping_bad_leaves_out_only_the_bad_xml_images_and_boxes() {
        let dir = tempfile::tempdir().unwrap();
        let parts = |n: usize| -> String {
            (0..n)
                .map(|i| format!("<part name='{i:02}' x='{}' y='{}'/>", 10 + i, 20 + i))
                .collect()
        };
        let xml = format!(
            "<dataset><images>\n\
             <image file='a.jpg'><box top='1' left='1' width='90' height='90'>{}</box></image>\n\
             <image file='b.jpg'><box top='1' left='1' width='-5' height='90'>{}</box></image>\n\
             <image file='c.jpg'><box top='1' left='1' width='90' height='90'>{}</box></image>\n\
             <image file='../d.jpg'><box top='1' left='1' width='90' height='90'/></image>\n\
             <image file='e.jpg'><box top='1' left='1' width='90' height='90'>{}</box>\
             <box top='1' left='1' width='90' height='90'>{}</box></image>\n\
             </images></dataset>",
            parts(68),
            parts(68),
            parts(67),
            parts(68),
            parts(68).replace("name='05'", "name='5x'"),
        );
        let path = dir.path().join("l.xml");
        std::fs::write(&path, &xml).unwrap();
        assert!(load_dataset(&path).is_err());
        let (ds, skipped) = load_dataset_skipping_bad(&path).unwrap();
        let files: Vec<_> = ds
            .faces
            .iter()
            .map(|f| f.image.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        // b: negative box; c: 67 points; d: path out of the folder; e's second box: bad name.
        assert_eq!(files, ["a.jpg", "e.jpg"]);
        assert_eq!(skipped.len(), 4, "{skipped:?}");
        let lines: Vec<usize> = skipped
            .iter()
            .map(|e| match e {
                Error::Xml { line, .. } => *line,
                other => panic!("{other}"),
            })
            .collect();
        assert_eq!(lines, [3, 5, 4, 6]);
        // Broken syntax is still fatal.
        std::fs::write(&path, &xml[..xml.len() - 20]).unwrap();
        assert!(load_dataset_skipping_bad(&path).is_err());
    }
}
