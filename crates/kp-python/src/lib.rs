//! `import kp`: kp's face detector, landmark models, training and dataset readers from Python,
//! numpy arrays in and out (PyO3, stable ABI 3.9+). The Python package is `python/kp`; this is
//! its compiled part, `kp._kp`.
//!
//! * Every kp error becomes a Python exception carrying kp's one-line message:
//!   `FileNotFoundError` when a file is missing, `ValueError` for bad arguments or
//!   configuration, `kp.KpError` for the rest. Nothing panics on user input; were a panic to
//!   happen, PyO3 turns it into an exception too.
//! * The GIL is released while kp detects, predicts or trains, so Python threads predict at
//!   once; a `Landmarker` holds no mutable state and is shared between threads as it is.
//! * kp's log events (`tracing`) go to Python's `logging` under the logger `kp`.

use std::path::PathBuf;

use kp_train::config::{Recipe, Task, TrainConfig};
use kp_train::landmarker::{FaceLandmarks, Landmarker as KpLandmarker};
use kp_train::pretrained::{ReadyModel, UnknownReadyModel};
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyFileNotFoundError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

mod logging;

create_exception!(
    kp,
    KpError,
    PyException,
    "An error kp reported (its message says what and where)."
);

/// Whether `e` or one of its sources is an I/O "not found".
fn not_found(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::NotFound {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// A kp error as the Python exception of the module docs.
fn to_py(e: kp_train::Error) -> PyErr {
    let msg = e.to_string();
    if not_found(&e) {
        return PyFileNotFoundError::new_err(msg);
    }
    match e {
        kp_train::Error::Config(_) | kp_train::Error::Json { .. } => PyValueError::new_err(msg),
        kp_train::Error::Model(kp_models::Error::UnknownModel { .. }) => PyValueError::new_err(msg),
        _ => KpError::new_err(msg),
    }
}

/// A kp-data error (a photo or a label file) as a Python exception.
fn data_err(e: kp_data::Error) -> PyErr {
    to_py(kp_train::Error::Data(e))
}

/// A photo from a path (`str` or `os.PathLike`) or a numpy `uint8` array `HxW` (gray) or
/// `HxWx3` / `HxWx4` (RGB, RGBA: alpha ignored).
fn photo(image: &Bound<'_, PyAny>) -> PyResult<image::RgbImage> {
    if image.is_instance_of::<PyString>() || image.hasattr("__fspath__")? {
        let path: PathBuf = image.extract()?;
        return kp_data::loading::load_rgb(&path).map_err(data_err);
    }
    let array: PyReadonlyArrayDyn<'_, u8> = image.extract().map_err(|_| {
        PyValueError::new_err(
            "image must be a path or a numpy uint8 array of shape (H, W), (H, W, 3) or (H, W, 4)",
        )
    })?;
    let shape = array.shape().to_vec();
    let (h, w, c) = match shape[..] {
        [h, w] => (h, w, 1),
        [h, w, c @ (3 | 4)] => (h, w, c),
        _ => {
            return Err(PyValueError::new_err(format!(
                "image array has shape {shape:?}; expected (H, W), (H, W, 3) or (H, W, 4)"
            )))
        }
    };
    let max = kp_data::loading::max_pixels();
    if h == 0 || w == 0 || (h as u64) * (w as u64) > max {
        return Err(PyValueError::new_err(format!(
            "image array is {w}x{h}: kp takes 1 to {max} pixels"
        )));
    }
    let view = array.as_array();
    let mut rgb = Vec::with_capacity(h * w * 3);
    if c == 1 {
        for &v in view.iter() {
            rgb.extend_from_slice(&[v, v, v]);
        }
    } else {
        let values: Vec<u8> = view.iter().copied().collect();
        for px in values.chunks_exact(c) {
            rgb.extend_from_slice(&px[..3]);
        }
    }
    Ok(image::RgbImage::from_raw(w as u32, h as u32, rgb).expect("h * w * 3 values"))
}

/// `(n, 2)` float32 array of points.
fn points_array<'py>(py: Python<'py>, points: &[[f32; 2]]) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let flat: Vec<f32> = points.iter().flatten().copied().collect();
    PyArray1::from_vec(py, flat).reshape([points.len(), 2])
}

/// One face: its box, the detector's score and 5 points, the model's keypoints (photo pixels,
/// pixel centres at integers).
#[pyclass(frozen, module = "kp")]
struct Face {
    /// `(left, top, width, height)`, or `None` for a model that sees the whole photo.
    #[pyo3(get, name = "box")]
    bbox: Option<(f32, f32, f32, f32)>,
    /// The detector's score in [0, 1] (`None` when no detector ran).
    #[pyo3(get)]
    score: Option<f32>,
    /// The detector's 5 points `(5, 2)` float32: eyes, nose tip, mouth corners (or `None`).
    #[pyo3(get)]
    points5: Option<Py<PyArray2<f32>>>,
    /// The model's keypoints `(K, 2)` float32 (`None` from `detect`).
    #[pyo3(get)]
    keypoints: Option<Py<PyArray2<f32>>>,
}

#[pymethods]
impl Face {
    fn __repr__(&self, py: Python<'_>) -> String {
        let k = self.keypoints.as_ref().map(|a| a.bind(py).shape()[0]);
        let none = || "None".to_string();
        format!(
            "Face(box={}, score={}, keypoints={})",
            self.bbox.map_or_else(none, |(l, t, w, h)| format!(
                "({l:.1}, {t:.1}, {w:.1}, {h:.1})"
            )),
            self.score.map_or_else(none, |s| format!("{s:.3}")),
            k.map_or_else(none, |k| format!("({k}, 2)"))
        )
    }
}

impl Face {
    fn new(
        py: Python<'_>,
        bbox: Option<[f32; 4]>,
        score: Option<f32>,
        points5: Option<[[f32; 2]; 5]>,
        keypoints: Option<Vec<[f32; 2]>>,
    ) -> PyResult<Self> {
        Ok(Self {
            bbox: bbox.map(|[l, t, w, h]| (l, t, w, h)),
            score,
            points5: points5
                .map(|p| points_array(py, &p).map(Bound::unbind))
                .transpose()?,
            keypoints: keypoints
                .map(|p| points_array(py, &p).map(Bound::unbind))
                .transpose()?,
        })
    }

    fn from_landmarks(py: Python<'_>, f: FaceLandmarks) -> PyResult<Self> {
        let points = f.keypoints.iter().map(|p| [p.x, p.y]).collect();
        Self::new(py, f.bbox, f.score, f.points5, Some(points))
    }
}

/// The bundled YuNet face detector and a landmark model: `Landmarker()` is the ready compact
/// 68-point model, `Landmarker("resnet18")` the heatmap ResNet18, `Landmarker.from_run(path)`
/// a model `kp train` wrote. Safe to share between threads.
#[pyclass(frozen, module = "kp")]
struct Landmarker {
    inner: KpLandmarker,
    label: String,
}

#[pymethods]
impl Landmarker {
    /// A ready model kp ships: `"compact"` (default), `"compact-wide"` or `"resnet18"`.
    #[new]
    #[pyo3(signature = (model = "compact"))]
    fn new(py: Python<'_>, model: &str) -> PyResult<Self> {
        let ready: ReadyModel = model
            .parse()
            .map_err(|e: UnknownReadyModel| PyValueError::new_err(e.to_string()))?;
        let inner = py
            .detach(|| KpLandmarker::ready(ready, None))
            .map_err(to_py)?;
        Ok(Self {
            inner,
            label: format!("ready:{}", ready.name()),
        })
    }

    /// The model of a run folder written by `kp train` (its weights and preprocessing).
    #[staticmethod]
    fn from_run(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = py
            .detach(|| KpLandmarker::from_run(&path, None))
            .map_err(to_py)?;
        Ok(Self {
            inner,
            label: path.display().to_string(),
        })
    }

    /// The model: `ready:NAME` or the run folder.
    #[getter]
    fn model(&self) -> &str {
        &self.label
    }

    /// The landmark scheme (`ibug68`, `imm58`).
    #[getter]
    fn scheme(&self) -> &'static str {
        self.inner.predictor().config.scheme().name
    }

    /// Every face on `image` (a path, or a uint8 array `HxW` / `HxWx3` RGB), best first: a
    /// list of `Face` with `box`, `score` and `points5` (no keypoints).
    fn detect(&self, py: Python<'_>, image: &Bound<'_, PyAny>) -> PyResult<Vec<Face>> {
        let rgb = photo(image)?;
        let found = py.detach(|| self.inner.detect(&rgb)).map_err(to_py)?;
        found
            .into_iter()
            .map(|d| Face::new(py, Some(d.bbox), Some(d.score), Some(d.points5), None))
            .collect()
    }

    /// The keypoints of every face on `image`: the detector's faces, or with `boxes` (a list
    /// of `(left, top, width, height)` in the model's own box convention, as `kp predict
    /// --box` takes) one face per box. A photo without a face gives an empty list.
    #[pyo3(signature = (image, boxes = None))]
    fn predict(
        &self,
        py: Python<'_>,
        image: &Bound<'_, PyAny>,
        boxes: Option<Vec<(f32, f32, f32, f32)>>,
    ) -> PyResult<Vec<Face>> {
        let rgb = photo(image)?;
        let boxes: Option<Vec<kp_data::BBox>> = boxes
            .map(|b| {
                b.into_iter()
                    .map(|(l, t, w, h)| {
                        let finite = [l, t, w, h].iter().all(|v| v.is_finite());
                        if finite && w > 0.0 && h > 0.0 {
                            Ok(kp_data::BBox::new(l, t, w, h))
                        } else {
                            Err(PyValueError::new_err(format!(
                                "box ({l}, {t}, {w}, {h}): width and height must be positive \
                                 and every value finite"
                            )))
                        }
                    })
                    .collect::<PyResult<_>>()
            })
            .transpose()?;
        let faces = py
            .detach(|| match &boxes {
                None => self.inner.landmarks(&rgb),
                Some(boxes) => {
                    let mut all = Vec::with_capacity(boxes.len());
                    for b in boxes {
                        all.extend(self.inner.landmarks_in(&rgb, Some(*b))?);
                    }
                    Ok(all)
                }
            })
            .map_err(to_py)?;
        faces
            .into_iter()
            .map(|f| Face::from_landmarks(py, f))
            .collect()
    }

    fn __repr__(&self) -> String {
        format!("Landmarker({})", self.label)
    }
}

/// A Python value as JSON (for configuration overrides).
fn json_value(v: &Bound<'_, PyAny>, key: &str) -> PyResult<serde_json::Value> {
    use serde_json::Value;
    if v.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = v.cast::<pyo3::types::PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Ok(i) = v.extract::<i64>() {
        return Ok(Value::from(i));
    }
    if let Ok(f) = v.extract::<f64>() {
        return serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| PyValueError::new_err(format!("{key}: {f} is not a finite number")));
    }
    if let Ok(s) = v.extract::<String>() {
        return Ok(Value::String(s));
    }
    if let Ok(p) = v.extract::<PathBuf>() {
        return Ok(Value::String(p.display().to_string()));
    }
    if let Ok(list) = v.cast::<PyList>() {
        return list.iter().map(|x| json_value(&x, key)).collect();
    }
    if let Ok(dict) = v.cast::<PyDict>() {
        let mut map = serde_json::Map::new();
        for (k, x) in dict.iter() {
            let name: String = k.extract()?;
            let value = json_value(&x, &format!("{key}.{name}"))?;
            map.insert(name, value);
        }
        return Ok(Value::Object(map));
    }
    Err(PyValueError::new_err(format!(
        "{key}: cannot use a {} as a configuration value",
        v.get_type().name()?
    )))
}

/// A `serde` name (`"nose"`, `"tuned"`) as the type it names.
fn parse_name<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> PyResult<T> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|e| PyValueError::new_err(format!("{what} `{s}`: {e}")))
}

/// Trains a model into the run folder `out` and returns its summary (`summary.json`) as a
/// dict. `task`: `nose`, `face` or `ibug`; `recipe`: `seed`, `tuned` or `compact`; `data`: a
/// datasets folder (default: `KP_DATA_DIR` or `../shared/datasets`); any other keyword sets
/// that field of the run's configuration (`epochs=5`, `batch_size=16`, `lr=1e-3`, ...; the
/// names of `kp train --print-config`). `resume=True` continues a stopped run. Progress goes
/// to the logger `kp`.
#[pyfunction]
#[pyo3(signature = (task, out, data = None, recipe = "seed", resume = false, **overrides))]
fn train<'py>(
    py: Python<'py>,
    task: &str,
    out: PathBuf,
    data: Option<PathBuf>,
    recipe: &str,
    resume: bool,
    overrides: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let task: Task = parse_name("task", task)?;
    let recipe: Recipe = parse_name("recipe", recipe)?;
    let cfg = TrainConfig::from_recipe(recipe, task, data.unwrap_or_default());
    let mut json = serde_json::to_value(&cfg).expect("a configuration serialises");
    if let Some(overrides) = overrides {
        let fields = json.as_object_mut().expect("a configuration is an object");
        for (k, v) in overrides.iter() {
            let key: String = k.extract()?;
            if !fields.contains_key(&key) {
                let mut known: Vec<&String> = fields.keys().collect();
                known.sort();
                let known: Vec<&str> = known.iter().map(|s| s.as_str()).collect();
                return Err(PyValueError::new_err(format!(
                    "unknown configuration field `{key}` (known: {})",
                    known.join(", ")
                )));
            }
            fields.insert(key.clone(), json_value(&v, &key)?);
        }
    }
    let cfg: TrainConfig = serde_json::from_value(json)
        .map_err(|e| PyValueError::new_err(format!("invalid configuration: {e}")))?;
    let opts = kp_train::trainer::TrainOptions {
        resume,
        ..Default::default()
    };
    let summary = py
        .detach(|| kp_train::trainer::train(cfg, &out, &opts))
        .map_err(to_py)?;
    let text = serde_json::to_string(&summary).expect("a summary serialises");
    py.import("json")?.call_method1("loads", (text,))
}

/// The faces of a dataset file or folder (IMM `.asf` folder, dlib/iBUG XML, 300-W `.pts`
/// folder): a list of dicts `{"image": path, "box": (l, t, w, h) | None, "keypoints": (K, 2)
/// float32}`.
#[pyfunction]
fn load_dataset<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let dataset = py
        .detach(|| kp_data::format::load_dataset(&path))
        .map_err(data_err)?;
    dataset
        .faces
        .iter()
        .map(|f| {
            let d = PyDict::new(py);
            d.set_item("image", f.image.display().to_string())?;
            d.set_item("box", f.bbox.map(|b| (b.left, b.top, b.width, b.height)))?;
            let points: Vec<[f32; 2]> = f.keypoints.iter().map(|p| [p.x, p.y]).collect();
            d.set_item("keypoints", points_array(py, &points)?)?;
            Ok(d)
        })
        .collect()
}

/// The compiled module `kp._kp`.
#[pymodule]
fn _kp(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("KpError", m.py().get_type::<KpError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<Landmarker>()?;
    m.add_class::<Face>()?;
    m.add_function(wrap_pyfunction!(train, m)?)?;
    m.add_function(wrap_pyfunction!(load_dataset, m)?)?;
    logging::install();
    Ok(())
}
