//! dlib's image-metadata XML (the format of the iBUG 300-W label files), read and written.
//!
//! Schema: `<dataset><name/><comment/><images><image file=.. [width=.. height=..]>
//! <box top=.. left=.. width=.. height=.. [ignore='1']><part name='00' x=.. y=../>...</box>
//! </image>...</images></dataset>`. Either quote style is accepted. Image paths are relative to
//! the XML file's folder. Parts are ordered by name (numerically when every name is a number).
//! A box without parts is an unlabelled face (the CS194-26 Kaggle test file has only those).
//!
//! Text is read as UTF-8; a file that is not valid UTF-8 is decoded as ISO-8859-1 (what dlib
//! declares).

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use quick_xml::escape::{escape, resolve_predefined_entity};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::error::{Error, Result};
use crate::face::{Dataset, Face};
use crate::geometry::{BBox, Point};
use crate::scheme::LandmarkScheme;

/// One `<part>`: a named landmark.
#[derive(Debug, Clone, PartialEq)]
pub struct XmlPart {
    /// The `name` attribute (`00`..`67` for iBUG-68).
    pub name: String,
    /// The position (`x`, `y` attributes).
    pub point: Point,
}

/// One `<box>`: a face, with its parts sorted by name.
#[derive(Debug, Clone, PartialEq)]
pub struct XmlBox {
    /// The `top`/`left`/`width`/`height` attributes.
    pub bbox: BBox,
    /// The `ignore` attribute.
    pub ignore: bool,
    /// The parts, sorted by name.
    pub parts: Vec<XmlPart>,
    /// 1-based line of the `<box>` tag (for error messages).
    pub line: usize,
    /// Byte offset of the `<box>` tag.
    pub position: u64,
}

/// One `<image>` with its boxes.
#[derive(Debug, Clone, PartialEq)]
pub struct XmlImage {
    /// The `file` attribute as written (relative to the XML's folder unless absolute).
    pub file: String,
    /// The optional `width` attribute.
    pub width: Option<u32>,
    /// The optional `height` attribute.
    pub height: Option<u32>,
    /// The boxes in file order.
    pub boxes: Vec<XmlBox>,
    /// 1-based line of the `<image>` tag.
    pub line: usize,
}

/// A whole parsed dlib XML file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct XmlDataset {
    /// Text of `<name>`, if any.
    pub name: Option<String>,
    /// Text of `<comment>`, if any.
    pub comment: Option<String>,
    /// The images in file order.
    pub images: Vec<XmlImage>,
}

/// Parser context: where we are, for error messages.
struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
    image: Option<(usize, String)>,
    boxn: Option<usize>,
    /// `(byte offset, 1-based line)` of the last line lookup, so that lookups at increasing
    /// offsets cost linear time over the whole file.
    cursor: Cell<(usize, usize)>,
}

impl Ctx<'_> {
    fn line_of(&self, pos: u64) -> usize {
        let end = (pos as usize).min(self.text.len());
        let (mut from, mut line) = self.cursor.get();
        if end < from {
            (from, line) = (0, 1);
        }
        line += self.text.as_bytes()[from..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.cursor.set((end, line));
        line
    }

    fn describe(&self, leaf: Option<&str>) -> String {
        let mut s = String::new();
        if let Some((i, file)) = &self.image {
            let _ = write!(s, "<image #{} file='{file}'>", i + 1);
        }
        if let Some(b) = self.boxn {
            let _ = write!(s, " <box #{}>", b + 1);
        }
        if let Some(l) = leaf {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(l);
        }
        if s.is_empty() {
            s.push_str("<dataset>");
        }
        s
    }

    fn err(&self, pos: u64, leaf: Option<&str>, message: impl Into<String>) -> Error {
        Error::Xml {
            path: self.path.to_path_buf(),
            line: self.line_of(pos),
            position: pos,
            // Both echo the file's text: capped and with control bytes escaped.
            element: kp_fs::shown(&self.describe(leaf)),
            message: kp_fs::shown(&message.into()),
        }
    }
}

/// The attributes of a tag as `(name, value)`, with malformed or duplicated attributes as errors.
fn attributes(e: &BytesStart, ctx: &Ctx, pos: u64, leaf: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| ctx.err(pos, Some(leaf), format!("bad attribute: {err}")))?;
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|err| ctx.err(pos, Some(leaf), format!("bad attribute value: {err}")))?;
        out.push((a.key.as_ref().to_owned(), value.into_owned()));
    }
    Ok(out)
}

fn get<'v>(attrs: &'v [(String, String)], key: &str) -> Option<&'v str> {
    attrs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn require<'v>(
    attrs: &'v [(String, String)],
    key: &str,
    ctx: &Ctx,
    pos: u64,
    leaf: &str,
) -> Result<&'v str> {
    get(attrs, key).ok_or_else(|| ctx.err(pos, Some(leaf), format!("missing attribute `{key}`")))
}

/// Largest coordinate accepted anywhere (no image kp reads is larger).
const MAX_COORD: f32 = 65_536.0;

fn number(v: &str, key: &str, ctx: &Ctx, pos: u64, leaf: &str) -> Result<f32> {
    match v.trim().parse::<f32>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(ctx.err(
            pos,
            Some(leaf),
            format!("attribute `{key}` = `{v}` is not a finite number"),
        )),
    }
}

fn size(v: Option<&str>, key: &str, ctx: &Ctx, pos: u64, leaf: &str) -> Result<Option<u32>> {
    v.map(|v| {
        v.trim().parse::<u32>().map_err(|_| {
            ctx.err(
                pos,
                Some(leaf),
                format!("attribute `{key}` = `{v}` is not a whole number"),
            )
        })
    })
    .transpose()
}

fn sort_parts(parts: &mut [XmlPart]) {
    if parts.iter().all(|p| p.name.parse::<u64>().is_ok()) {
        parts.sort_by_key(|p| p.name.parse::<u64>().unwrap_or(u64::MAX));
    } else {
        parts.sort_by(|a, b| a.name.cmp(&b.name));
    }
}

fn trimmed(s: String) -> String {
    s.trim().to_owned()
}

/// Decodes file bytes: UTF-8, or ISO-8859-1 when they are not valid UTF-8.
fn decode(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => e.into_bytes().iter().map(|&b| b as char).collect(),
    }
}

/// Parses dlib XML text; `path` is only used in error messages.
pub fn parse_dlib_xml(text: &str, path: &Path) -> Result<XmlDataset> {
    parse(text, path, None)
}

/// Parses dlib XML text, leaving out every `<image>` that holds a bad element (a missing or
/// malformed attribute, a bad box or part) instead of failing; returns the images kept and one
/// error per image left out. Broken XML syntax and a missing `<dataset>` still fail.
pub fn parse_dlib_xml_skipping_bad(text: &str, path: &Path) -> Result<(XmlDataset, Vec<Error>)> {
    let mut skipped = Vec::new();
    let xml = parse(text, path, Some(&mut skipped))?;
    Ok((xml, skipped))
}

/// The parser behind [`parse_dlib_xml`]; with `skipped`, element errors inside an `<image>`
/// (or on the `<image>` tag) are pushed there and that image is left out.
fn parse(text: &str, path: &Path, mut skipped: Option<&mut Vec<Error>>) -> Result<XmlDataset> {
    let mut reader = Reader::from_str(text);
    let mut ctx = Ctx {
        path,
        text,
        image: None,
        boxn: None,
        cursor: Cell::new((0, 1)),
    };
    let mut out = XmlDataset::default();
    let mut seen_dataset = false;
    // Inside `<dataset>`: a file that ends there was cut off.
    let mut dataset_open = false;
    let mut image: Option<XmlImage> = None;
    let mut current: Option<(XmlBox, HashMap<String, u64>)> = None;
    let mut capture: Option<String> = None; // text of <name>/<comment> being read
                                            // Inside an `<image>` that had a bad element (only with `skipped`): ignore until `</image>`.
    let mut skipping = false;
    loop {
        let before = reader.buffer_position();
        let event = reader.read_event().map_err(|e| {
            let pos = reader.error_position();
            ctx.err(pos, None, format!("malformed XML: {e}"))
        })?;
        if skipping {
            match event {
                Event::End(ref e) if e.name().as_ref() == "image" => {
                    skipping = false;
                    ctx.image = None;
                    ctx.boxn = None;
                }
                Event::Eof => break,
                _ => {}
            }
            continue;
        }
        // Byte offset of the tag's `<`.
        let pos = before
            + text
                .get(before as usize..)
                .and_then(|t| t.find('<'))
                .unwrap_or(0) as u64;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                let is_image = e.name().as_ref() == "image";
                let outcome = (|| -> Result<()> {
                    match e.name().as_ref() {
                        "dataset" => {
                            seen_dataset = true;
                            dataset_open = !empty;
                        }
                        "name" | "comment" if image.is_none() && !empty => {
                            capture = Some(String::new())
                        }
                        "image" => {
                            let leaf = "<image>";
                            if image.is_some() {
                                return Err(ctx.err(
                                    pos,
                                    Some(leaf),
                                    "<image> inside another <image>",
                                ));
                            }
                            let a = attributes(e, &ctx, pos, leaf)?;
                            let file = require(&a, "file", &ctx, pos, leaf)?.to_owned();
                            let leaf = format!("<image #{} file='{file}'>", out.images.len() + 1);
                            let root = ctx.path.parent().unwrap_or(Path::new(""));
                            if let Err(why) = crate::confine::check_inside(root, Path::new(&file)) {
                                return Err(ctx.err(pos, Some(&leaf), format!("the image {why}")));
                            }
                            let img = XmlImage {
                                width: size(get(&a, "width"), "width", &ctx, pos, &leaf)?,
                                height: size(get(&a, "height"), "height", &ctx, pos, &leaf)?,
                                file,
                                boxes: Vec::new(),
                                line: ctx.line_of(pos),
                            };
                            if empty {
                                out.images.push(img);
                            } else {
                                ctx.image = Some((out.images.len(), img.file.clone()));
                                image = Some(img);
                            }
                        }
                        "box" => {
                            let Some(img) = image.as_ref() else {
                                return Err(ctx.err(
                                    pos,
                                    Some("<box>"),
                                    "<box> outside an <image>",
                                ));
                            };
                            if current.is_some() {
                                return Err(ctx.err(
                                    pos,
                                    Some("<box>"),
                                    "<box> inside another <box>",
                                ));
                            }
                            let leaf = format!("<box #{}>", img.boxes.len() + 1);
                            let a = attributes(e, &ctx, pos, &leaf)?;
                            let mut v = [0f32; 4];
                            for (slot, key) in v.iter_mut().zip(["left", "top", "width", "height"])
                            {
                                let s = require(&a, key, &ctx, pos, &leaf)?;
                                *slot = number(s, key, &ctx, pos, &leaf)?;
                            }
                            if v[2] <= 0.0 || v[3] <= 0.0 {
                                return Err(ctx.err(
                                    pos,
                                    Some(&leaf),
                                    format!(
                                        "box width and height must be positive, got {} x {}",
                                        v[2], v[3]
                                    ),
                                ));
                            }
                            if v.iter().any(|c| c.abs() > MAX_COORD) {
                                return Err(ctx.err(
                                    pos,
                                    Some(&leaf),
                                    format!(
                                        "box {v:?} is out of range (|coordinate| > {MAX_COORD})"
                                    ),
                                ));
                            }
                            let ignore = match get(&a, "ignore").map(str::trim) {
                                None | Some("0") | Some("false") => false,
                                Some("1") | Some("true") => true,
                                Some(other) => {
                                    return Err(ctx.err(
                                        pos,
                                        Some(&leaf),
                                        format!("attribute `ignore` = `{other}` is not 0 or 1"),
                                    ))
                                }
                            };
                            let b = XmlBox {
                                bbox: BBox::new(v[0], v[1], v[2], v[3]),
                                ignore,
                                parts: Vec::new(),
                                line: ctx.line_of(pos),
                                position: pos,
                            };
                            if empty {
                                if let Some(img) = image.as_mut() {
                                    img.boxes.push(b);
                                }
                            } else {
                                ctx.boxn = Some(img.boxes.len());
                                current = Some((b, HashMap::new()));
                            }
                        }
                        "part" => {
                            let Some((b, names)) = current.as_mut() else {
                                return Err(ctx.err(pos, Some("<part>"), "<part> outside a <box>"));
                            };
                            let a = attributes(e, &ctx, pos, "<part>")?;
                            let name = require(&a, "name", &ctx, pos, "<part>")?.to_owned();
                            let leaf = format!("<part name='{name}'>");
                            let x =
                                number(require(&a, "x", &ctx, pos, &leaf)?, "x", &ctx, pos, &leaf)?;
                            let y =
                                number(require(&a, "y", &ctx, pos, &leaf)?, "y", &ctx, pos, &leaf)?;
                            let (w, h) = image
                                .as_ref()
                                .and_then(|i| i.width.zip(i.height))
                                .map_or((MAX_COORD, MAX_COORD), |(w, h)| (w as f32, h as f32));
                            if x < -w || y < -h || x > 2.0 * w || y > 2.0 * h {
                                return Err(ctx.err(
                                    pos,
                                    Some(&leaf),
                                    format!("part ({x}, {y}) lies far outside the {w} x {h} image"),
                                ));
                            }
                            if let Some(&first) = names.get(&name) {
                                let first = ctx.line_of(first);
                                return Err(ctx.err(
                                    pos,
                                    Some(&leaf),
                                    format!("duplicate part name '{name}' (first on line {first})"),
                                ));
                            }
                            names.insert(name.clone(), pos);
                            b.parts.push(XmlPart {
                                name,
                                point: Point::new(x, y),
                            });
                        }
                        _ => {}
                    }
                    Ok(())
                })();
                if let Err(err) = outcome {
                    // With `skipped`, a bad element costs only the image that holds it.
                    let within_image = image.is_some() || is_image;
                    match skipped.as_deref_mut() {
                        Some(list) if within_image => {
                            list.push(err);
                            image = None;
                            current = None;
                            ctx.boxn = None;
                            if is_image && empty {
                                ctx.image = None;
                            } else {
                                skipping = true;
                            }
                        }
                        _ => return Err(err),
                    }
                }
            }
            Event::End(ref e) => match e.name().as_ref() {
                "dataset" => dataset_open = false,
                "box" => {
                    if let Some((mut b, _)) = current.take() {
                        sort_parts(&mut b.parts);
                        if let Some(img) = image.as_mut() {
                            img.boxes.push(b);
                        }
                    }
                    ctx.boxn = None;
                }
                "image" => {
                    if let Some(img) = image.take() {
                        out.images.push(img);
                    }
                    ctx.image = None;
                }
                "name" => out.name = capture.take().map(trimmed).or(out.name.take()),
                "comment" => out.comment = capture.take().map(trimmed).or(out.comment.take()),
                _ => {}
            },
            Event::Text(ref t) => {
                if let Some(c) = capture.as_mut() {
                    c.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(ref r) => {
                if let Some(c) = capture.as_mut() {
                    if let Ok(Some(ch)) = r.resolve_char_ref() {
                        c.push(ch);
                    } else if let Some(s) = resolve_predefined_entity(r) {
                        c.push_str(s);
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let end = text.len() as u64;
    if current.is_some() || image.is_some() || skipping {
        return Err(ctx.err(end, None, "file ends inside this element (truncated?)"));
    }
    if dataset_open {
        return Err(ctx.err(end, None, "file ends before </dataset> (truncated?)"));
    }
    if !seen_dataset {
        return Err(ctx.err(
            end,
            None,
            "no <dataset> element: not a dlib image-metadata XML file",
        ));
    }
    Ok(out)
}

/// Reads a file's text (see [`decode`]).
fn read_text(path: &Path) -> Result<String> {
    let bytes = kp_fs::read_limited(path, kp_fs::MAX_TEXT_BYTES).map_err(|e| Error::io(path, e))?;
    Ok(decode(bytes))
}

/// Reads and parses a dlib XML file.
pub fn read_dlib_xml(path: &Path) -> Result<XmlDataset> {
    parse_dlib_xml(&read_text(path)?, path)
}

/// The keypoints of a box: its parts must be named `0..n` (any zero padding), in order.
fn box_keypoints(b: &XmlBox, img: &XmlImage, index: usize, path: &Path) -> Result<Vec<Point>> {
    for (i, p) in b.parts.iter().enumerate() {
        if p.name.parse::<usize>().ok() != Some(i) {
            let names = b.parts.iter().map(|p| p.name.as_str()).collect::<Vec<_>>();
            return Err(Error::Xml {
                path: path.to_path_buf(),
                line: b.line,
                position: b.position,
                element: format!("<image file='{}'> <box #{}>", img.file, index + 1),
                message: format!(
                    "part names must be 0..{} in order for a face; found {} \
                     (use dlib_xml::read_dlib_xml for partial markups)",
                    b.parts.len(),
                    names.join(",")
                ),
            });
        }
    }
    Ok(b.parts.iter().map(|p| p.point).collect())
}

/// Loads a dlib XML file as a [`Dataset`]: one [`Face`] per `<box>`, image paths resolved against
/// the XML's folder, named after the file's stem. Every labelled box must have parts named
/// `0..n` with the same `n`; the scheme is the known one with `n` points, if any.
/// Images are not opened (the Kaggle test file's images are not distributed).
pub fn load_dlib_xml(path: &Path) -> Result<Dataset> {
    load_dlib_xml_with(path, false).map(|(d, _)| d)
}

/// Like [`load_dlib_xml`], but an `<image>` with a bad element and a box with bad parts (wrong
/// names, another point count than the first face) are left out; returns the dataset and one
/// error per image or box left out.
pub fn load_dlib_xml_skipping_bad(path: &Path) -> Result<(Dataset, Vec<Error>)> {
    load_dlib_xml_with(path, true)
}

/// One face per box; with `skip_bad`, bad images and boxes are left out and their errors
/// returned, otherwise the first one fails.
pub(crate) fn load_dlib_xml_with(path: &Path, skip_bad: bool) -> Result<(Dataset, Vec<Error>)> {
    let text = read_text(path)?;
    let mut skipped = Vec::new();
    let xml = parse(&text, path, skip_bad.then_some(&mut skipped))?;
    // Skips the box of `e` (with `skip_bad`) or fails with it.
    let mut skip_or_fail = |e: Error| {
        if skip_bad {
            skipped.push(e);
            Ok(())
        } else {
            Err(e)
        }
    };
    let folder = path.parent().unwrap_or(Path::new(""));
    let mut faces = Vec::new();
    let mut count: Option<(usize, usize)> = None; // (points, line of the first labelled box)
    for img in &xml.images {
        let image = folder.join(&img.file);
        let image_size = img.width.zip(img.height);
        for (i, b) in img.boxes.iter().enumerate() {
            let keypoints = match box_keypoints(b, img, i, path) {
                Ok(k) => k,
                Err(e) => {
                    skip_or_fail(e)?;
                    continue;
                }
            };
            if !keypoints.is_empty() {
                match count {
                    None => count = Some((keypoints.len(), b.line)),
                    Some((n, first)) if n != keypoints.len() => {
                        let e = Error::Xml {
                            path: path.to_path_buf(),
                            line: b.line,
                            position: b.position,
                            element: format!("<image file='{}'> <box #{}>", img.file, i + 1),
                            message: format!(
                                "expected {n} points (as the box on line {first}), found {}",
                                keypoints.len()
                            ),
                        };
                        skip_or_fail(e)?;
                        continue;
                    }
                    Some(_) => {}
                }
            }
            let mut face = Face::new(&image, keypoints);
            face.bbox = Some(b.bbox);
            face.image_size = image_size;
            face.ignore = b.ignore;
            faces.push(face);
        }
    }
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dlib-xml".into());
    let dataset = Dataset {
        name,
        scheme: count.and_then(|(n, _)| LandmarkScheme::for_num_points(n)),
        faces,
    };
    Ok((dataset, skipped))
}

/// The image path to write: relative to `folder` when the image lies under it.
fn relative_to(image: &Path, folder: &Path) -> PathBuf {
    image
        .strip_prefix(folder)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| image.to_path_buf())
}

/// Renders faces as dlib XML; image paths are written relative to `folder` where possible.
/// Consecutive and non-consecutive faces of one image are grouped under one `<image>`, in order
/// of first appearance. A face without a box gets its keypoints' tight box.
pub fn to_dlib_xml_string(dataset: &Dataset, folder: &Path) -> Result<String> {
    let mut order: Vec<&Path> = Vec::new();
    let mut groups: HashMap<&Path, Vec<&Face>> = HashMap::new();
    for f in &dataset.faces {
        let e = groups.entry(f.image.as_path()).or_default();
        if e.is_empty() {
            order.push(f.image.as_path());
        }
        e.push(f);
    }
    let mut s = String::new();
    s.push_str("<?xml version='1.0' encoding='UTF-8'?>\n");
    s.push_str("<?xml-stylesheet type='text/xsl' href='image_metadata_stylesheet.xsl'?>\n");
    s.push_str("<dataset>\n");
    let _ = writeln!(s, "<name>{}</name>", escape(dataset.name.as_str()));
    s.push_str("<comment>Written by kp-data. Coordinates are 0-based pixels.</comment>\n");
    s.push_str("<images>\n");
    for image in order {
        let faces = &groups[image];
        let file = relative_to(image, folder);
        let file = file.to_string_lossy();
        let _ = write!(s, "  <image file='{}'", escape(file.as_ref()));
        if let Some((w, h)) = faces[0].image_size {
            let _ = write!(s, " width='{w}' height='{h}'");
        }
        s.push_str(">\n");
        for f in faces {
            let b = f
                .bbox
                .or_else(|| BBox::around(&f.keypoints))
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "{}: a face with neither box nor keypoints cannot be written as dlib XML",
                        f.image.display()
                    ))
                })?;
            let _ = write!(
                s,
                "    <box top='{}' left='{}' width='{}' height='{}'",
                b.top, b.left, b.width, b.height
            );
            if f.ignore {
                s.push_str(" ignore='1'");
            }
            s.push_str(">\n");
            for (i, p) in f.keypoints.iter().enumerate() {
                let _ = writeln!(s, "      <part name='{i:02}' x='{}' y='{}'/>", p.x, p.y);
            }
            s.push_str("    </box>\n");
        }
        s.push_str("  </image>\n");
    }
    s.push_str("</images>\n</dataset>\n");
    Ok(s)
}

/// Writes a dataset as dlib XML at `path`, atomically (temporary file, then rename).
/// Integer coordinates are written as integers, so dlib can read the file; fractional ones
/// keep their decimals (readable by kp).
pub fn write_dlib_xml(path: &Path, dataset: &Dataset) -> Result<()> {
    let folder = path.parent().unwrap_or(Path::new(""));
    let text = to_dlib_xml_string(dataset, folder)?;
    Ok(kp_fs::write_atomic(path, text.as_bytes())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DLIB_STYLE: &str = "<?xml version='1.0' encoding='ISO-8859-1'?>
<?xml-stylesheet type='text/xsl' href='image_metadata_stylesheet.xsl'?>
<dataset>
<name>Test &amp; more</name>
<comment>two faces</comment>
<images>
  <image file='sub/a.jpg' width='640' height='480'>
    <box top='10' left='20' width='30' height='40'>
      <part name='01' x='3' y='4'/>
      <part name='00' x='1' y='2'/>
      <part name='02' x='5.5' y='6'/>
    </box>
    <box top='1' left='2' width='3' height='4' ignore='1'>
      <part name='00' x='7' y='8'/>
      <part name='01' x='9' y='10'/>
      <part name='02' x='11' y='12'/>
    </box>
  </image>
  <image file='b.png'/>
</images>
</dataset>
";

    const ETREE_STYLE: &str = r#"<dataset>
<name>kaggle</name>
<images>
  <image file="helen/trainset/146827737_1.jpg">
    <box height="295" left="70" top="224" width="295">
      </box>
  </image>
  <image file="x_mirror.jpg">
    <box height="5" left="6" top="7" width="8" />
  </image>
</images>
</dataset>"#;

    fn p() -> &'static Path {
        Path::new("dir/labels.xml")
    }

    #[test]
    fn parses_dlib_formatting() {
        let x = parse_dlib_xml(DLIB_STYLE, p()).unwrap();
        assert_eq!(x.name.as_deref(), Some("Test & more"));
        assert_eq!(x.comment.as_deref(), Some("two faces"));
        assert_eq!(x.images.len(), 2);
        let a = &x.images[0];
        assert_eq!(
            (a.file.as_str(), a.width, a.height),
            ("sub/a.jpg", Some(640), Some(480))
        );
        assert_eq!(a.line, 7);
        assert_eq!(a.boxes.len(), 2);
        assert_eq!(a.boxes[0].bbox, BBox::new(20.0, 10.0, 30.0, 40.0));
        let names: Vec<_> = a.boxes[0].parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["00", "01", "02"]);
        assert_eq!(a.boxes[0].parts[2].point, Point::new(5.5, 6.0));
        assert!(!a.boxes[0].ignore && a.boxes[1].ignore);
        assert!(x.images[1].boxes.is_empty());
    }

    #[test]
    fn parses_elementtree_formatting_and_empty_boxes() {
        let x = parse_dlib_xml(ETREE_STYLE, p()).unwrap();
        assert_eq!(x.images.len(), 2);
        assert_eq!(
            x.images[0].boxes[0].bbox,
            BBox::new(70.0, 224.0, 295.0, 295.0)
        );
        assert!(x.images[0].boxes[0].parts.is_empty());
        assert_eq!(x.images[1].boxes[0].bbox, BBox::new(6.0, 7.0, 8.0, 5.0));
        assert_eq!(x.images[0].width, None);
    }

    #[test]
    fn numeric_part_order_without_padding() {
        let t = "<dataset><images><image file='a'><box top='0' left='0' width='1' height='1'>\
                 <part name='10' x='10' y='0'/><part name='2' x='2' y='0'/><part name='0' x='0' y='0'/>\
                 </box></image></images></dataset>";
        let x = parse_dlib_xml(t, p()).unwrap();
        let xs: Vec<f32> = x.images[0].boxes[0]
            .parts
            .iter()
            .map(|p| p.point.x)
            .collect();
        assert_eq!(xs, [0.0, 2.0, 10.0]);
    }

    fn err(text: &str) -> (Error, String) {
        let e = parse_dlib_xml(text, p()).unwrap_err();
        let s = e.to_string();
        (e, s)
    }

    #[test]
    fn hostile_values_are_echoed_short_and_on_one_line() {
        let junk = format!("1\n\u{1b}[2J{}", "9".repeat(100_000));
        let (_, s) = err(&DLIB_STYLE.replace("x='5.5'", &format!("x='{junk}'")));
        assert!(s.len() < 1_000, "{} bytes", s.len());
        assert!(!s.contains('\n') && !s.contains('\u{1b}'), "{s}");
        assert!(s.contains("more characters"), "{s}");
        let long_name = "a/".repeat(5_000) + "x.jpg";
        let (_, s) = err(&DLIB_STYLE
            .replace("sub/a.jpg", &long_name)
            .replace("x='5.5'", "x='nan'"));
        assert!(s.len() < 1_000, "{} bytes", s.len());
    }

    #[test]
    fn images_outside_the_xml_folder_are_refused_on_their_line() {
        for file in ["../../x.jpg", "/etc/passwd"] {
            let (e, s) = err(&DLIB_STYLE.replace("sub/a.jpg", file));
            assert!(matches!(e, Error::Xml { .. }), "{s}");
            assert!(s.contains("outside the dataset's folder"), "{s}");
        }
    }

    #[test]
    fn duplicate_part_is_named() {
        let (e, s) = err(&DLIB_STYLE.replace("name='02' x='5.5'", "name='00' x='5.5'"));
        assert!(matches!(e, Error::Xml { line: 11, .. }), "{s}");
        assert!(
            s.contains("<image #1 file='sub/a.jpg'> <box #1> <part name='00'>"),
            "{s}"
        );
        assert!(
            s.contains("duplicate part name '00' (first on line 10)"),
            "{s}"
        );
        assert!(s.starts_with("dir/labels.xml:11:"), "{s}");
    }

    #[test]
    fn missing_attributes_are_named() {
        let (_, s) = err(&DLIB_STYLE.replace("<part name='01' x='3'", "<part name='01'"));
        assert!(
            s.contains("<part name='01'>") && s.contains("missing attribute `x`"),
            "{s}"
        );
        let (_, s) = err(&DLIB_STYLE.replace("top='1' left='2'", "left='2'"));
        assert!(
            s.contains("<box #2>") && s.contains("missing attribute `top`"),
            "{s}"
        );
        let (_, s) = err(&DLIB_STYLE.replace("<image file='b.png'/>", "<image/>"));
        assert!(
            s.contains("<image>") && s.contains("missing attribute `file`"),
            "{s}"
        );
    }

    #[test]
    fn non_numeric_values_are_named_with_byte_position() {
        let t = DLIB_STYLE.replace("x='9'", "x='nine'");
        let (e, s) = err(&t);
        let want = t.find("<part name='01' x='nine'").unwrap() as u64;
        assert!(
            matches!(e, Error::Xml { position, line: 15, .. } if position == want),
            "{s}"
        );
        assert!(
            s.contains("<box #2> <part name='01'>") && s.contains("`nine`"),
            "{s}"
        );
        let (_, s) = err(&DLIB_STYLE.replace("width='640'", "width='-640'"));
        assert!(
            s.contains("<image #1 file='sub/a.jpg'>") && s.contains("`-640`"),
            "{s}"
        );
        let (_, s) = err(&DLIB_STYLE.replace("ignore='1'", "ignore='yes'"));
        assert!(s.contains("`yes`"), "{s}");
        let (_, s) = err(&DLIB_STYLE.replace("y='6'", "y='inf'"));
        assert!(s.contains("not a finite number"), "{s}");
    }

    #[test]
    fn broken_xml_is_an_error() {
        let (e, s) = err(&DLIB_STYLE.replace("</box>\n  </image>", "</image>"));
        assert!(matches!(e, Error::Xml { .. }), "{s}");
        assert!(s.contains("malformed XML"), "{s}");
        let cut = &DLIB_STYLE[..DLIB_STYLE.find("<part name='02'").unwrap()];
        let (_, s) = err(cut);
        assert!(s.contains("truncated") && s.contains("<box #1>"), "{s}");
        let (_, s) = err("<html><body/></html>");
        assert!(s.contains("no <dataset>"), "{s}");
        let (_, s) =
            err("<dataset><images><box top='1' left='1' width='1' height='1'/></images></dataset>");
        assert!(s.contains("outside an <image>"), "{s}");
        let (_, s) =
            err("<dataset><images><image file='a' width='1' width='2'/></images></dataset>");
        assert!(s.contains("bad attribute"), "{s}");
    }

    #[test]
    fn load_resolves_paths_and_builds_faces() {
        let dir = tempfile::tempdir().unwrap();
        let xml = dir.path().join("l.xml");
        std::fs::write(&xml, DLIB_STYLE).unwrap();
        let d = load_dlib_xml(&xml).unwrap();
        assert_eq!(d.name, "l");
        assert_eq!(d.len(), 2);
        assert_eq!(d.scheme, None);
        assert_eq!(d.faces[0].image, dir.path().join("sub/a.jpg"));
        assert_eq!(d.faces[0].image_size, Some((640, 480)));
        assert_eq!(d.faces[0].keypoints[0], Point::new(1.0, 2.0));
        assert!(d.faces[1].ignore);
    }

    #[test]
    fn load_rejects_gaps_and_mixed_counts() {
        let dir = tempfile::tempdir().unwrap();
        let xml = dir.path().join("l.xml");
        std::fs::write(
            &xml,
            DLIB_STYLE.replace("name='01' x='3'", "name='05' x='3'"),
        )
        .unwrap();
        let s = load_dlib_xml(&xml).unwrap_err().to_string();
        assert!(
            s.contains("l.xml:8:") && s.contains("<box #1>") && s.contains("00,02,05"),
            "{s}"
        );
        std::fs::write(
            &xml,
            DLIB_STYLE.replace("<part name='02' x='11' y='12'/>", ""),
        )
        .unwrap();
        let s = load_dlib_xml(&xml).unwrap_err().to_string();
        assert!(
            s.contains("<box #2>") && s.contains("expected 3 points") && s.contains("found 2"),
            "{s}"
        );
    }

    #[test]
    fn latin1_files_decode() {
        let mut bytes = DLIB_STYLE.replace("two faces", "caf\u{e9}").into_bytes();
        let i = bytes.iter().position(|&b| b == 0xC3).unwrap();
        bytes.splice(i..i + 2, [0xE9u8]); // ISO-8859-1 'é'
        let x = parse_dlib_xml(&decode(bytes), p()).unwrap();
        assert_eq!(x.comment.as_deref(), Some("caf\u{e9}"));
    }

    #[test]
    fn write_then_read_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in.xml");
        std::fs::write(&src, DLIB_STYLE).unwrap();
        let d = load_dlib_xml(&src).unwrap();
        let out = dir.path().join("out.xml");
        write_dlib_xml(&out, &d).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(
            text.contains("<image file='sub/a.jpg' width='640' height='480'>"),
            "{text}"
        );
        assert!(text.contains("<part name='02' x='5.5' y='6'/>"), "{text}");
        let back = load_dlib_xml(&out).unwrap();
        assert_eq!(back.faces, d.faces);
        assert_eq!(back.name, "out");
        // A missing folder is an I/O error naming the file.
        let e = write_dlib_xml(&dir.path().join("no/such/a.xml"), &d).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
        assert!(e.to_string().contains("a.xml"), "{e}");
    }

    #[test]
    fn writer_uses_keypoint_box_and_rejects_empty_faces() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.jpg");
        let mut d = Dataset {
            name: "x <&>".into(),
            scheme: None,
            faces: vec![Face::new(
                &img,
                vec![Point::new(1.0, 2.0), Point::new(4.0, 8.0)],
            )],
        };
        let out = dir.path().join("o.xml");
        write_dlib_xml(&out, &d).unwrap();
        let x = read_dlib_xml(&out).unwrap();
        assert_eq!(x.name.as_deref(), Some("x <&>"));
        assert_eq!(x.images[0].boxes[0].bbox, BBox::new(1.0, 2.0, 3.0, 6.0));
        d.faces.push(Face::new(&img, vec![]));
        assert!(matches!(
            write_dlib_xml(&out, &d),
            Err(Error::InvalidArgument(_))
        ));
    }
}
