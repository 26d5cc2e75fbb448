//! kp-data on the real datasets (`KP_DATA_DIR` or an ancestor's `shared/datasets`).
//!
//! Expected counts come from `shared/datasets/README.md`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use kp_data::{
    dlib_xml, image_dimensions, imm, load_dataset, load_dlib_xml, load_face_resized, load_imm,
    load_pts_dir, read_pts, scheme::LandmarkScheme, table, test_data_dir, BBox, DatasetFormat,
    Face, Gender, Point, Split, Summary, IBUG68, IMM58,
};

fn data(rel: &str) -> PathBuf {
    test_data_dir().join(rel)
}

fn imm_dataset() -> kp_data::Dataset {
    load_imm(&data("imm_face_db")).expect("IMM loads")
}

/// The mean of shapes normalised to zero centroid and unit RMS radius.
fn mean_normalised_shape<'a>(shapes: impl Iterator<Item = &'a [Point]>, n: usize) -> Vec<Point> {
    let mut sum = vec![Point::default(); n];
    let mut count = 0.0;
    for pts in shapes {
        assert_eq!(pts.len(), n);
        let cx = pts.iter().map(|p| p.x).sum::<f32>() / n as f32;
        let cy = pts.iter().map(|p| p.y).sum::<f32>() / n as f32;
        let r = (pts
            .iter()
            .map(|p| (p.x - cx).powi(2) + (p.y - cy).powi(2))
            .sum::<f32>()
            / n as f32)
            .sqrt();
        for (s, p) in sum.iter_mut().zip(pts) {
            s.x += (p.x - cx) / r;
            s.y += (p.y - cy) / r;
        }
        count += 1.0;
    }
    assert!(count > 0.0);
    sum.iter()
        .map(|s| Point::new(s.x / count, s.y / count))
        .collect()
}

/// Mirrors `mean` about its vertical axis through the centroid (x -> -x) and checks that every
/// point's nearest mirrored point is the mirror of its flip partner.
fn check_flip_on_mean_shape(scheme: &LandmarkScheme, mean: &[Point]) {
    let mirrored: Vec<Point> = mean.iter().map(|p| Point::new(-p.x, p.y)).collect();
    let mut wrong = Vec::new();
    for (i, p) in mean.iter().enumerate() {
        let nearest = (0..mirrored.len())
            .min_by(|&a, &b| p.distance(mirrored[a]).total_cmp(&p.distance(mirrored[b])))
            .unwrap();
        if nearest != scheme.flip[i] {
            wrong.push((i, scheme.flip[i], nearest));
        }
    }
    assert!(
        wrong.is_empty(),
        "{}: (point, flip partner, nearest mirrored point): {wrong:?}",
        scheme.name
    );
}

fn group_mean(scheme: &LandmarkScheme, shape: &[Point], group: &str) -> Point {
    let r = scheme.group(group).unwrap();
    let n = r.len() as f32;
    let (sx, sy) = shape[r]
        .iter()
        .fold((0.0, 0.0), |(x, y), p| (x + p.x, y + p.y));
    Point::new(sx / n, sy / n)
}

// ---------------------------------------------------------------- IMM

#[test]
fn imm_has_240_faces_of_58_points_inside_their_images() {
    let d = imm_dataset();
    assert_eq!(d.len(), 240);
    assert_eq!(d.scheme, Some(&IMM58));
    for f in &d.faces {
        assert_eq!(f.keypoints.len(), 58, "{}", f.image.display());
        assert_eq!(f.image_size, Some((640, 480)), "{}", f.image.display());
        assert!(f.image.is_file(), "{}", f.image.display());
        for p in &f.keypoints {
            assert!(
                p.x >= 0.0 && p.x <= 639.0 && p.y >= 0.0 && p.y <= 479.0,
                "{}: {p:?} outside the image",
                f.image.display()
            );
        }
    }
    // Sorted by file name; the last file is 40-6m (there is no 40-6f).
    let names: Vec<String> = d
        .faces
        .iter()
        .map(|f| f.image.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(names[0], "01-1m");
    assert_eq!(names[239], "40-6m");
}

#[test]
fn imm_metadata_and_standard_split() {
    let d = imm_dataset();
    let persons: HashSet<u32> = d.faces.iter().map(|f| f.person.unwrap()).collect();
    assert_eq!(persons, (1..=40).collect());
    let females: HashSet<u32> = d
        .faces
        .iter()
        .filter(|f| f.gender == Some(Gender::Female))
        .map(|f| f.person.unwrap())
        .collect();
    assert_eq!(females, HashSet::from([8, 12, 14, 15, 22, 30, 35]));
    assert!(d.faces.iter().all(|f| (1..=6).contains(&f.pose.unwrap())));

    let s = Split::imm_standard(&d).unwrap();
    assert_eq!((s.train.len(), s.val.len()), (192, 48));
    s.validate(d.len()).unwrap();
    assert!(s.train.iter().all(|&i| d.faces[i].person.unwrap() <= 32));
    assert!(s.val.iter().all(|&i| d.faces[i].person.unwrap() >= 33));
}

#[test]
fn imm_pixels_match_the_asf_values_times_640_480() {
    let asf = data("imm_face_db/01-1m.asf");
    let face = imm::load_asf_face(&asf).unwrap();
    // First point line of 01-1m.asf (README): 0.35763609 0.64077979.
    assert!((face.keypoints[0].x - 0.357_636_1 * 640.0).abs() < 1e-3);
    assert!((face.keypoints[0].y - 0.640_779_8 * 480.0).abs() < 1e-3);
    // Both column layouts occur and parse (README: 199 files with 7 columns, 41 with 10).
    let mut widths = HashMap::new();
    for p in imm::asf_files(&data("imm_face_db")).unwrap() {
        let text = std::fs::read_to_string(&p).unwrap();
        let first = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .nth(1)
            .unwrap();
        *widths.entry(first.split_whitespace().count()).or_insert(0) += 1;
    }
    assert_eq!(widths, HashMap::from([(7, 199), (10, 41)]));
}

#[test]
fn imm_nose_tip_of_01_1m_is_inside_the_nose() {
    let face = imm::load_asf_face(&data("imm_face_db/01-1m.asf")).unwrap();
    let tip = face.keypoints[IMM58.nose_tip];
    let nose = BBox::around(&face.keypoints[IMM58.group("nose").unwrap()]).unwrap();
    assert!(
        tip.x >= nose.left && tip.x <= nose.right() && tip.y >= nose.top && tip.y <= nose.bottom(),
        "{tip:?} outside the nose box {nose:?}"
    );
    // Near the face centre: within 10% of the face width of the face box's vertical axis, and
    // between the eyes and the mouth.
    let face_box = BBox::around(&face.keypoints).unwrap();
    assert!((tip.x - face_box.center().x).abs() < 0.1 * face_box.width);
    let eyes = group_mean(&IMM58, &face.keypoints, "left_eye").y;
    let mouth = group_mean(&IMM58, &face.keypoints, "mouth").y;
    assert!(eyes < tip.y && tip.y < mouth);
}

#[test]
fn imm_flip_matches_mirrored_mean_frontal_shape() {
    let d = imm_dataset();
    // Image types 1, 2, 5, 6 are full frontal (authors' note).
    let frontal = d
        .faces
        .iter()
        .filter(|f| matches!(f.pose, Some(1 | 2 | 5 | 6)))
        .map(|f| f.keypoints.as_slice());
    let mean = mean_normalised_shape(frontal, 58);
    check_flip_on_mean_shape(&IMM58, &mean);

    // Group names follow the subject: the subject's right eye/brow is on the image's left.
    let x = |g| group_mean(&IMM58, &mean, g).x;
    assert!(x("right_eye") < 0.0 && x("left_eye") > 0.0);
    assert!(x("right_eyebrow") < 0.0 && x("left_eyebrow") > 0.0);
    let y = |g| group_mean(&IMM58, &mean, g).y;
    assert!(y("left_eyebrow") < y("left_eye") && y("left_eye") < y("nose"));
    assert!(y("nose") < y("mouth"));
    // Outer eye corners are the extreme eye points.
    let (l, r) = IMM58.outer_eye_corners;
    let eyes: Vec<usize> = IMM58
        .group("right_eye")
        .unwrap()
        .chain(IMM58.group("left_eye").unwrap())
        .collect();
    let min = *eyes
        .iter()
        .min_by(|&&a, &&b| mean[a].x.total_cmp(&mean[b].x))
        .unwrap();
    let max = *eyes
        .iter()
        .max_by(|&&a, &&b| mean[a].x.total_cmp(&mean[b].x))
        .unwrap();
    assert_eq!((min, max), (l, r));
}

#[test]
fn imm_resized_loading_maps_keypoints() {
    let d = imm_dataset();
    let face: &Face = &d.faces[0];
    let (img, pts) = load_face_resized(face, 160, 120).unwrap();
    assert_eq!(img.dimensions(), (160, 120));
    assert!(img.pixels().all(|p| (-0.5..=0.5).contains(&p.0[0])));
    let k = face.keypoints[IMM58.nose_tip];
    let want = Point::new((k.x + 0.5) / 4.0 - 0.5, (k.y + 0.5) / 4.0 - 0.5);
    assert!(pts[IMM58.nose_tip].distance(want) < 1e-4);
    // Persons 02-04 are grey-scale images; they load too.
    let grey = d.faces.iter().find(|f| f.person == Some(2)).unwrap();
    assert_eq!(
        load_face_resized(grey, 80, 60).unwrap().0.dimensions(),
        (80, 60)
    );
}

#[test]
fn imm_table_csv_round_trip() {
    let d = imm_dataset();
    let df = table::to_dataframe(&d).unwrap();
    assert_eq!(df.height(), 240);
    assert_eq!(df.width(), 11 + 2 * 58);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("imm.csv");
    table::write_csv(&d, &csv).unwrap();
    let df2 = table::read_frame_csv(&csv).unwrap();
    assert!(df.equals_missing(&df2));
    let back = table::frame_to_faces(&df2, &csv).unwrap();
    assert_eq!(back, d.faces);
    let ds = load_dataset(&csv).unwrap();
    assert_eq!(ds.scheme, Some(&IMM58));
    assert_eq!(
        Split::imm_standard(&ds).unwrap(),
        Split::imm_standard(&d).unwrap()
    );
}

#[test]
fn imm_summary() {
    let path = data("imm_face_db");
    assert_eq!(DatasetFormat::detect(&path).unwrap(), DatasetFormat::ImmAsf);
    let s = Summary::compute(&load_dataset(&path).unwrap()).unwrap();
    assert_eq!((s.images, s.faces, s.labelled_faces), (240, 240, 240));
    assert_eq!(s.points_per_face, Some(58));
    assert_eq!((s.width_min, s.width_max), (Some(640), Some(640)));
    assert_eq!((s.height_min, s.height_max), (Some(480), Some(480)));
    assert_eq!(
        (s.split.kind.as_str(), s.split.train, s.split.val),
        ("imm-standard", 192, 48)
    );
    assert_eq!(s.missing_images, 0);
}

// ---------------------------------------------------------------- 300-W train crops

#[test]
fn train_crops_have_1326_faces_of_68_points_and_all_images() {
    let xml = data("ibug_300w_train_crops/labels_ibug_300W_train_crops.xml");
    let d = load_dlib_xml(&xml).unwrap();
    assert_eq!(d.len(), 1326);
    assert_eq!(d.scheme, Some(&IBUG68));
    let mut sources = HashMap::new();
    for f in &d.faces {
        assert_eq!(f.keypoints.len(), 68);
        assert!(f.image.is_file(), "{}", f.image.display());
        assert_eq!(
            image_dimensions(&f.image).ok(),
            f.image_size,
            "{}",
            f.image.display()
        );
        let rel = f.image.strip_prefix(xml.parent().unwrap()).unwrap();
        let dir = rel.parent().unwrap().to_string_lossy().into_owned();
        *sources.entry(dir).or_insert(0) += 1;
        // README: landmarks lie inside their box up to 1 px of rounding.
        let b = f.bbox.unwrap();
        for p in &f.keypoints {
            assert!(
                p.x >= b.left - 1.0 && p.x <= b.right() + 1.0,
                "{}",
                f.image.display()
            );
            assert!(
                p.y >= b.top - 1.0 && p.y <= b.bottom() + 1.0,
                "{}",
                f.image.display()
            );
        }
    }
    assert_eq!(
        sources,
        HashMap::from([
            ("images/afw/afw".to_string(), 279),
            ("images/helen/testset".to_string(), 290),
            ("images/helen/trainset".to_string(), 757),
        ])
    );
    let folder = data("ibug_300w_train_crops");
    assert_eq!(
        DatasetFormat::detect(&folder).unwrap(),
        DatasetFormat::DlibXml
    );
    let s = Summary::compute(&load_dataset(&folder).unwrap()).unwrap();
    assert_eq!(
        (s.images, s.faces, s.points_per_face),
        (1326, 1326, Some(68))
    );
    assert_eq!((s.split.train, s.split.val), (1061, 265)); // round(1326 * 0.2) = 265
}

#[test]
fn ibug_flip_matches_mirrored_mean_shape_of_train_crops() {
    let xml = data("ibug_300w_train_crops/labels_ibug_300W_train_crops.xml");
    let d = load_dlib_xml(&xml).unwrap();
    let mean = mean_normalised_shape(d.faces.iter().map(|f| f.keypoints.as_slice()), 68);
    check_flip_on_mean_shape(&IBUG68, &mean);
    let x = |g| group_mean(&IBUG68, &mean, g).x;
    assert!(x("right_eye") < 0.0 && x("left_eye") > 0.0);
}

#[test]
fn train_crops_dlib_xml_round_trip() {
    let xml = data("ibug_300w_train_crops/labels_ibug_300W_train_crops.xml");
    let d = load_dlib_xml(&xml).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("copy.xml");
    dlib_xml::write_dlib_xml(&out, &d).unwrap();
    // The copy names images outside its own folder: reading it back is an opt-in.
    let refused = load_dlib_xml(&out).unwrap_err().to_string();
    assert!(
        refused.contains("outside the dataset's folder"),
        "{refused}"
    );
    assert!(
        refused.contains("copy.xml:"),
        "names the XML line: {refused}"
    );
    kp_data::confine::set_allow_outside(true);
    let back = load_dlib_xml(&out).unwrap();
    // Images outside the output folder are written with their full path.
    assert_eq!(back.faces, d.faces);
}

// ---------------------------------------------------------------- Kaggle test XML

#[test]
fn kaggle_test_xml_has_1008_boxes_without_parts() {
    let xml = data("ibug_300W_large_face_landmark_dataset/labels_ibug_300W_test_parsed.xml");
    let d = load_dlib_xml(&xml).unwrap();
    assert_eq!(d.len(), 1008);
    assert!(d.faces.iter().all(|f| !f.is_labelled() && f.bbox.is_some()));
    assert_eq!(d.scheme, None);
    let mirrors = d
        .faces
        .iter()
        .filter(|f| f.image.to_string_lossy().ends_with("_mirror.jpg"))
        .count();
    assert_eq!(mirrors, 504);
    // README example: the first entry.
    assert!(d.faces[0].image.ends_with("helen/trainset/146827737_1.jpg"));
    assert_eq!(d.faces[0].bbox, Some(BBox::new(70.0, 224.0, 295.0, 295.0)));
    let s = Summary::compute(&d).unwrap();
    assert_eq!(
        (s.faces, s.labelled_faces, s.missing_images),
        (1008, 0, 1008)
    );
    assert_eq!(s.points_per_face, None);
}

#[test]
fn eyes_only_xml_agrees_with_kaggle_boxes_and_the_ibug_flip() {
    let root = data("ibug_300W_large_face_landmark_dataset");
    let eyes =
        dlib_xml::read_dlib_xml(&root.join("derived/labels_ibug_300W_test_eyes_only.xml")).unwrap();
    let kaggle = dlib_xml::read_dlib_xml(&root.join("labels_ibug_300W_test_parsed.xml")).unwrap();
    assert_eq!(eyes.images.len(), 1008);
    let names: Vec<String> = (36..48).map(|i| i.to_string()).collect();
    for (e, k) in eyes.images.iter().zip(&kaggle.images) {
        assert_eq!(e.file, k.file);
        assert_eq!(e.boxes.len(), 1);
        assert_eq!(e.boxes[0].bbox, k.boxes[0].bbox, "{}", e.file);
        let got: Vec<&str> = e.boxes[0].parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(got, names);
    }
    // Partial markups are not faces of a scheme: loading them as a dataset is a typed error.
    let err = load_dlib_xml(&root.join("derived/labels_ibug_300W_test_eyes_only.xml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("part names must be 0..12"), "{err}");

    // dlib's `_mirror.jpg` copies: x' = width - 1 - x and the iBUG flip permutation.
    let by_file: HashMap<&str, &dlib_xml::XmlImage> =
        eyes.images.iter().map(|i| (i.file.as_str(), i)).collect();
    let mut checked = 0;
    for img in eyes
        .images
        .iter()
        .filter(|i| !i.file.ends_with("_mirror.jpg"))
    {
        let stem = Path::new(&img.file).with_extension("");
        let mirror = by_file[format!("{}_mirror.jpg", stem.display()).as_str()];
        let w = img.width.unwrap() as f32;
        let part = |i: &dlib_xml::XmlImage, n: usize| {
            i.boxes[0]
                .parts
                .iter()
                .find(|p| p.name == n.to_string())
                .unwrap()
                .point
        };
        for n in 36..48 {
            let p = part(img, n);
            let q = part(mirror, IBUG68.flip[n]);
            assert_eq!(q, Point::new(w - 1.0 - p.x, p.y), "{} part {n}", img.file);
            checked += 1;
        }
    }
    assert_eq!(checked, 504 * 12);
}

// ---------------------------------------------------------------- dlib examples

#[test]
fn dlib_example_xmls_have_several_faces_per_image() {
    for (file, images, faces) in [
        ("training_with_face_landmarks.xml", 4, 18),
        ("testing_with_face_landmarks.xml", 5, 25),
    ] {
        let d = load_dlib_xml(&data("dlib_examples_faces").join(file)).unwrap();
        assert_eq!(d.len(), faces, "{file}");
        assert_eq!(d.scheme, Some(&IBUG68), "{file}");
        let mut per_image: HashMap<&Path, usize> = HashMap::new();
        for f in &d.faces {
            assert_eq!(f.keypoints.len(), 68);
            assert!(f.image.is_file(), "{}", f.image.display());
            *per_image.entry(f.image.as_path()).or_default() += 1;
        }
        assert_eq!(per_image.len(), images, "{file}");
        assert!(per_image.values().any(|&n| n > 1), "{file}");
        let s = Summary::compute(&d).unwrap();
        assert_eq!((s.images, s.faces, s.missing_images), (images, faces, 0));
    }
    // Two XML files in one folder: detection asks which one.
    let e = DatasetFormat::detect(&data("dlib_examples_faces"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("testing_with_face_landmarks.xml"), "{e}");
}

// ---------------------------------------------------------------- .pts sample

#[test]
fn pts_sample_is_68_points_converted_to_0_based() {
    let dir = data("ibug_300w_pts_samples");
    let pts_file = dir.join("lfpw/testset/image_0010.pts");
    let pts = read_pts(&pts_file).unwrap();
    assert_eq!(pts.len(), 68);
    // First point line of the file, minus 1.
    let text = std::fs::read_to_string(&pts_file).unwrap();
    let first: Vec<f32> = text
        .lines()
        .nth(3)
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(pts[0], Point::new(first[0] - 1.0, first[1] - 1.0));

    assert_eq!(DatasetFormat::detect(&dir).unwrap(), DatasetFormat::Pts);
    let d = load_pts_dir(&dir).unwrap();
    assert_eq!(d.len(), 1);
    let f = &d.faces[0];
    assert_eq!(f.image, dir.join("lfpw/testset/image_0010.png"));
    assert_eq!(f.image_size, Some((1280, 1024)));
    // 1-based values are >= 1, so 0-based points are inside the image.
    for p in &f.keypoints {
        assert!(
            p.x >= 0.0 && p.x <= 1279.0 && p.y >= 0.0 && p.y <= 1023.0,
            "{p:?}"
        );
    }
}
