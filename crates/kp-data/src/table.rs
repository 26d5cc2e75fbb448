//! Annotations as a polars [`DataFrame`], one row per face, and CSV files of them.
//!
//! Columns: `image` (path), `image_width`, `image_height`, `person`, `pose` (u32, nullable),
//! `gender` (`f`/`m`, nullable), `ignore` (bool), `box_left`, `box_top`, `box_width`,
//! `box_height` (f32, nullable), then `x0, y0, x1, y1, ...` (f32; a face with fewer points than
//! the widest face, e.g. an unlabelled one, has nulls at the end).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::face::{Dataset, Face, Gender};
use crate::geometry::{BBox, Point};
use crate::scheme::LandmarkScheme;

/// The columns before the keypoints, with their types.
const META: [(&str, DataType); 11] = [
    ("image", DataType::String),
    ("image_width", DataType::UInt32),
    ("image_height", DataType::UInt32),
    ("person", DataType::UInt32),
    ("pose", DataType::UInt32),
    ("gender", DataType::String),
    ("ignore", DataType::Boolean),
    ("box_left", DataType::Float32),
    ("box_top", DataType::Float32),
    ("box_width", DataType::Float32),
    ("box_height", DataType::Float32),
];

fn table_err(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Table {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

fn memory() -> PathBuf {
    PathBuf::from("<dataframe>")
}

fn col<T>(name: &str, v: Vec<T>) -> Column
where
    Series: NamedFrom<Vec<T>, [T]>,
{
    Column::from(Series::new(name.into(), v))
}

/// The faces as a DataFrame, one row per face.
pub fn faces_to_frame(faces: &[Face]) -> Result<DataFrame> {
    let n_points = faces.iter().map(|f| f.keypoints.len()).max().unwrap_or(0);
    let g = |f: &Face| {
        f.gender.map(|g| match g {
            Gender::Female => "f",
            Gender::Male => "m",
        })
    };
    let b = |sel: fn(&BBox) -> f32| -> Vec<Option<f32>> {
        faces.iter().map(|f| f.bbox.as_ref().map(sel)).collect()
    };
    let mut cols = vec![
        col(
            "image",
            faces
                .iter()
                .map(|f| f.image.to_string_lossy().into_owned())
                .collect(),
        ),
        col(
            "image_width",
            faces.iter().map(|f| f.image_size.map(|s| s.0)).collect(),
        ),
        col(
            "image_height",
            faces.iter().map(|f| f.image_size.map(|s| s.1)).collect(),
        ),
        col("person", faces.iter().map(|f| f.person).collect()),
        col("pose", faces.iter().map(|f| f.pose).collect()),
        col("gender", faces.iter().map(g).collect()),
        col("ignore", faces.iter().map(|f| f.ignore).collect()),
        col("box_left", b(|b| b.left)),
        col("box_top", b(|b| b.top)),
        col("box_width", b(|b| b.width)),
        col("box_height", b(|b| b.height)),
    ];
    for i in 0..n_points {
        let xs = faces
            .iter()
            .map(|f| f.keypoints.get(i).map(|p| p.x))
            .collect();
        let ys = faces
            .iter()
            .map(|f| f.keypoints.get(i).map(|p| p.y))
            .collect();
        cols.push(col(&format!("x{i}"), xs));
        cols.push(col(&format!("y{i}"), ys));
    }
    DataFrame::new(faces.len(), cols).map_err(|e| table_err(&memory(), e))
}

/// The annotations of a dataset as a DataFrame (see [`faces_to_frame`]).
pub fn to_dataframe(dataset: &Dataset) -> Result<DataFrame> {
    faces_to_frame(&dataset.faces)
}

/// Number of keypoint column pairs `x0,y0 .. x{n-1},y{n-1}` in a frame.
fn point_columns(df: &DataFrame, path: &Path) -> Result<usize> {
    let mut n = 0;
    while df.column(&format!("x{n}")).is_ok() {
        if df.column(&format!("y{n}")).is_err() {
            return Err(table_err(path, format!("column x{n} has no y{n}")));
        }
        n += 1;
    }
    if df.column(&format!("y{n}")).is_ok() {
        return Err(table_err(path, format!("column y{n} has no x{n}")));
    }
    Ok(n)
}

/// Turns a frame with the columns of [`faces_to_frame`] back into faces. `path` names the
/// source in error messages, which also give the 0-based data row and the column.
pub fn frame_to_faces(df: &DataFrame, path: &Path) -> Result<Vec<Face>> {
    let err = |e: PolarsError| table_err(path, e);
    let get = |name: &str| df.column(name).map_err(err);
    let image = get("image")?.str().map_err(err)?;
    let width = get("image_width")?.u32().map_err(err)?;
    let height = get("image_height")?.u32().map_err(err)?;
    let person = get("person")?.u32().map_err(err)?;
    let pose = get("pose")?.u32().map_err(err)?;
    let gender = get("gender")?.str().map_err(err)?;
    let ignore = get("ignore")?.bool().map_err(err)?;
    let boxes = ["box_left", "box_top", "box_width", "box_height"]
        .map(|c| get(c).and_then(|c| c.f32().map_err(err)));
    let [bl, bt, bw, bh] = boxes;
    let (bl, bt, bw, bh) = (bl?, bt?, bw?, bh?);
    let n = point_columns(df, path)?;
    let mut xs = Vec::with_capacity(n);
    let mut ys = Vec::with_capacity(n);
    for i in 0..n {
        xs.push(get(&format!("x{i}"))?.f32().map_err(err)?);
        ys.push(get(&format!("y{i}"))?.f32().map_err(err)?);
    }
    let row_err = |row: usize, column: &str, m: &str| {
        table_err(path, format!("row {row}, column {column}: {m}"))
    };
    let mut faces = Vec::with_capacity(df.height());
    for row in 0..df.height() {
        let img = image
            .get(row)
            .ok_or_else(|| row_err(row, "image", "missing image path"))?;
        let mut keypoints = Vec::new();
        let mut ended = false;
        for i in 0..n {
            match (xs[i].get(row), ys[i].get(row)) {
                (Some(x), Some(y)) if !ended => keypoints.push(Point::new(x, y)),
                (None, None) => ended = true,
                (Some(_), Some(_)) => {
                    return Err(row_err(
                        row,
                        &format!("x{i}"),
                        "point after a missing point",
                    ))
                }
                _ => return Err(row_err(row, &format!("x{i}"), "x and y must both be set")),
            }
        }
        let bbox = match (bl.get(row), bt.get(row), bw.get(row), bh.get(row)) {
            (Some(l), Some(t), Some(w), Some(h)) => Some(BBox::new(l, t, w, h)),
            (None, None, None, None) => None,
            _ => {
                return Err(row_err(
                    row,
                    "box_left",
                    "box columns must all be set or all empty",
                ))
            }
        };
        let gender = match gender.get(row) {
            None => None,
            Some("f") => Some(Gender::Female),
            Some("m") => Some(Gender::Male),
            Some(other) => return Err(row_err(row, "gender", &format!("`{other}` is not f or m"))),
        };
        let mut face = Face::new(img, keypoints);
        face.bbox = bbox;
        face.image_size = width.get(row).zip(height.get(row));
        face.person = person.get(row);
        face.pose = pose.get(row);
        face.gender = gender;
        face.ignore = ignore.get(row).unwrap_or(false);
        faces.push(face);
    }
    Ok(faces)
}

/// Writes a frame as CSV (with a header), atomically.
pub fn write_frame_csv(df: &mut DataFrame, path: &Path) -> Result<()> {
    kp_fs::write_atomic_with(path, |w| {
        CsvWriter::new(w)
            .include_header(true)
            .finish(df)
            .map_err(|e| table_err(path, e))
    })
}

/// The column types for a CSV header written by [`write_frame_csv`]: the known meta columns,
/// `f32` for everything else.
fn schema_for(header: &str) -> Schema {
    header
        .trim_end_matches(['\r', '\n'])
        .split(',')
        .map(|name| {
            let name = name.trim_matches('"');
            let dtype = META
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| t.clone())
                .unwrap_or(DataType::Float32);
            Field::new(name.into(), dtype)
        })
        .collect()
}

/// Reads a CSV written by [`write_frame_csv`] with the proper column types.
pub fn read_frame_csv(path: &Path) -> Result<DataFrame> {
    let text = kp_fs::read_text(path).map_err(|e| Error::io(path, e))?;
    let header = text.lines().next().unwrap_or("");
    if header.trim().is_empty() {
        return Err(table_err(path, "empty file (no header line)"));
    }
    let schema = schema_for(header);
    CsvReadOptions::default()
        .with_has_header(true)
        .with_schema(Some(Arc::new(schema)))
        .into_reader_with_file_handle(std::io::Cursor::new(text.into_bytes()))
        .finish()
        .map_err(|e| table_err(path, e))
}

/// Writes a dataset's annotations as CSV at `path`, atomically.
pub fn write_csv(dataset: &Dataset, path: &Path) -> Result<()> {
    let mut df = to_dataframe(dataset)?;
    write_frame_csv(&mut df, path)
}

/// Reads an annotation CSV back into a dataset named after the file stem; the scheme is the
/// known one whose point count all labelled faces share, if any.
pub fn read_csv(path: &Path) -> Result<Dataset> {
    let df = read_frame_csv(path)?;
    let faces = frame_to_faces(&df, path)?;
    let mut counts = faces
        .iter()
        .filter(|f| f.is_labelled())
        .map(|f| f.keypoints.len());
    let first = counts.next();
    let scheme = match first {
        Some(n) if counts.all(|m| m == n) => LandmarkScheme::for_num_points(n),
        _ => None,
    };
    Ok(Dataset {
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "csv".into()),
        scheme,
        faces,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Face> {
        let mut a = Face::new(
            "/data/imm/01-1m.jpg",
            vec![
                Point::new(228.88712, 307.57428),
                Point::new(1.0 / 3.0, 479.25),
            ],
        );
        a.person = Some(1);
        a.pose = Some(1);
        a.gender = Some(Gender::Male);
        a.image_size = Some((640, 480));
        let mut b = Face::new("rel/with,comma \"q\".jpg", vec![]);
        b.bbox = Some(BBox::new(70.0, 224.0, 295.5, 1e-7));
        b.ignore = true;
        vec![a, b]
    }

    #[test]
    fn frame_has_one_row_per_face_and_point_columns() {
        let df = faces_to_frame(&sample()).unwrap();
        assert_eq!(df.height(), 2);
        assert_eq!(df.width(), META.len() + 4);
        assert_eq!(
            df.column("x1").unwrap().f32().unwrap().get(0),
            Some(1.0 / 3.0)
        );
        assert_eq!(df.column("x1").unwrap().f32().unwrap().get(1), None);
        let names: Vec<String> = df
            .get_column_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let meta: Vec<&str> = META.iter().map(|(n, _)| *n).collect();
        assert_eq!(names[..META.len()], meta[..]);
    }

    #[test]
    fn csv_round_trip_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("faces.csv");
        let d = Dataset {
            name: "x".into(),
            scheme: None,
            faces: sample(),
        };
        let df = to_dataframe(&d).unwrap();
        write_csv(&d, &p).unwrap();
        let df2 = read_frame_csv(&p).unwrap();
        assert!(df.equals_missing(&df2), "{df}\n{df2}");
        let back = read_csv(&p).unwrap();
        assert_eq!(back.faces, d.faces);
        assert_eq!(back.name, "faces");
    }

    #[test]
    fn empty_dataset_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.csv");
        let d = Dataset {
            name: "e".into(),
            scheme: None,
            faces: vec![],
        };
        write_csv(&d, &p).unwrap();
        assert!(read_csv(&p).unwrap().faces.is_empty());
    }

    #[test]
    fn bad_tables_name_file_row_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.csv");
        let d = Dataset {
            name: "x".into(),
            scheme: None,
            faces: sample(),
        };
        write_csv(&d, &p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();

        std::fs::write(&p, text.replacen(",m,", ",x,", 1)).unwrap();
        let s = read_csv(&p).unwrap_err().to_string();
        assert!(
            s.contains("bad.csv") && s.contains("row 0, column gender"),
            "{s}"
        );

        std::fs::write(&p, text.replacen(",479.25", ",abc", 1)).unwrap();
        let s = read_csv(&p).unwrap_err().to_string();
        assert!(s.contains("bad.csv") && s.contains("abc"), "{s}");

        std::fs::write(&p, text.replacen(",479.25", ",", 1)).unwrap();
        let s = read_csv(&p).unwrap_err().to_string();
        assert!(s.contains("row 0, column x1") && s.contains("both"), "{s}");

        std::fs::write(&p, "").unwrap();
        assert!(read_csv(&p).unwrap_err().to_string().contains("bad.csv"));
        let e = read_csv(&dir.path().join("none.csv")).unwrap_err();
        assert!(
            matches!(e, Error::Io { .. }) && e.to_string().contains("none.csv"),
            "{e}"
        );
    }
}
