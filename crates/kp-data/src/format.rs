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
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        ));
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
    let (format, file) = resolve(path)?;
    tracing::debug!("{}: loading as {format}", file.display());
    match format {
        DatasetFormat::ImmAsf => imm::load_imm(&file),
        DatasetFormat::DlibXml => dlib_xml::load_dlib_xml(&file),
        #[cfg(feature = "tables")]
        DatasetFormat::Csv => crate::table::read_csv(&file),
        #[cfg(not(feature = "tables"))]
        DatasetFormat::Csv => Err(crate::Error::UnknownFormat {
            path: file,
            message: "CSV annotation tables need kp-data's `tables` feature".into(),
        }),
        DatasetFormat::Pts if file.is_file() => Ok(Dataset {
            name: file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            scheme: Some(&crate::scheme::IBUG68),
            faces: vec![pts::load_pts_face(&file)?],
        }),
        DatasetFormat::Pts => pts::load_pts_dir(&file),
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
}
