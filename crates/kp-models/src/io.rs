//! Saving and loading model variables as safetensors.
//!
//! [`save_varmap`] writes through [`kp_fs::write_atomic`] (a temporary file renamed over
//! `path`), so a crash never leaves a half-written checkpoint. Names are the PyTorch state-dict names, so the file loads with
//! `model.load_state_dict(safetensors.torch.load_file(path))`. [`load_varmap`] copies tensors
//! into the existing variables by name, converting dtype and device.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use crate::error::{Error, Result};
use crate::models::registry::{build_model, KeypointModel, ModelConfig, ModelKind};
use crate::nn::init::seeded_var_builder;

/// Writes every variable of `varmap` to `path` (safetensors, `format: pt` metadata), atomically.
pub fn save_varmap(varmap: &VarMap, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let tensors: Vec<(String, Tensor)> = {
        let data = varmap.data().lock().expect("VarMap lock poisoned");
        let mut v = Vec::with_capacity(data.len());
        for (name, var) in data.iter() {
            let t = var.as_tensor().to_device(&Device::Cpu)?.contiguous()?;
            v.push((name.clone(), t));
        }
        v
    };
    save_tensors(&tensors, path)
}

/// Writes named tensors to `path` (safetensors, `format: pt` metadata) atomically, through
/// [`kp_fs::write_atomic`], and its checksum beside it ([`checksum_path`]).
pub fn save_tensors(tensors: &[(String, Tensor)], path: &Path) -> Result<()> {
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let data = tensors.iter().map(|(n, t)| (n.as_str(), t));
    let bytes = safetensors::tensor::serialize(data, Some(metadata))?;
    kp_fs::write_atomic(path, &bytes)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let line = format!("{}  {name}\n", sha256_hex(&bytes));
    Ok(kp_fs::write_atomic(checksum_path(path), line.as_bytes())?)
}

/// The checksum file of a weights file: `FILE.sha256`, one line `HEX  NAME` as `sha256sum`
/// writes it (so `sha256sum -c FILE.sha256` checks it too).
pub fn checksum_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

/// The sha256 of `bytes` in lower-case hex (as `sha256sum` prints it).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads a weights file: a regular file only (a FIFO would hang), at most 4 GiB, and, when a
/// checksum was written beside it ([`save_tensors`] does), equal to it: flipped bytes are an
/// error naming the file instead of garbage weights. Files without a checksum (older runs,
/// files from elsewhere) are read as they are.
pub fn read_weights(path: &Path) -> Result<Vec<u8>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = kp_fs::read_limited(path, 4 << 30).map_err(io)?;
    let sums = checksum_path(path);
    if sums.exists() {
        let line = kp_fs::read_limited(&sums, 4096).map_err(|source| Error::Io {
            path: sums.clone(),
            source,
        })?;
        let want = String::from_utf8_lossy(&line);
        let want = want.split_whitespace().next().unwrap_or("");
        if !want.eq_ignore_ascii_case(&sha256_hex(&bytes)) {
            return Err(Error::Checksum {
                path: path.to_path_buf(),
            });
        }
    }
    Ok(bytes)
}

/// What [`load_varmap`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoadReport {
    /// Variables set from the file.
    pub loaded: usize,
    /// Tensors in the file that the model does not have (sorted).
    pub unexpected: Vec<String>,
}

/// Sets every variable of `varmap` from the tensor of the same name in `path`. Fails when one
/// is missing, has another shape or holds a NaN or an infinity (nothing is changed then);
/// extra tensors are reported.
pub fn load_varmap(varmap: &VarMap, path: impl AsRef<Path>) -> Result<LoadReport> {
    let path = path.as_ref();
    let bytes = read_weights(path)?;
    load_varmap_bytes(varmap, &bytes, path)
}

/// [`load_varmap`] from the bytes of a safetensors file (weights embedded in a binary);
/// `source` names them in errors.
pub fn load_varmap_bytes(varmap: &VarMap, bytes: &[u8], source: &Path) -> Result<LoadReport> {
    let file = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?;
    set_vars(varmap, &file, source)
}

/// Writes the safetensors file `src` to `dst` with every floating-point tensor in `dtype`
/// (f16 halves a model's size; integer tensors such as BatchNorm's `num_batches_tracked` are
/// kept), atomically.
pub fn convert_floats(src: &Path, dst: &Path, dtype: DType) -> Result<()> {
    let file = candle_core::safetensors::load_buffer(&read_weights(src)?, &Device::Cpu)?;
    let mut tensors: Vec<(String, Tensor)> = Vec::with_capacity(file.len());
    for (name, t) in file {
        let t = if t.dtype().is_float() {
            t.to_dtype(dtype)?
        } else {
            t
        };
        tensors.push((name, t));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    save_tensors(&tensors, dst)
}

fn set_vars(varmap: &VarMap, file: &HashMap<String, Tensor>, path: &Path) -> Result<LoadReport> {
    let data = varmap.data().lock().expect("VarMap lock poisoned");
    // Check everything first so a failed load leaves the model untouched.
    let mut staged = Vec::with_capacity(data.len());
    for (name, var) in data.iter() {
        let t = file.get(name).ok_or_else(|| Error::MissingTensor {
            path: path.to_path_buf(),
            name: name.clone(),
        })?;
        if t.dims() != var.dims() {
            return Err(Error::TensorShape {
                path: path.to_path_buf(),
                name: name.clone(),
                expected: var.dims().to_vec(),
                found: t.dims().to_vec(),
            });
        }
        if t.dtype().is_float() {
            let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            if let Some(bad) = v.iter().find(|x| !x.is_finite()) {
                return Err(Error::NonFinite {
                    path: path.to_path_buf(),
                    name: name.clone(),
                    value: *bad,
                });
            }
        }
        let t = t.to_dtype(var.dtype())?.to_device(var.device())?;
        staged.push((var.clone(), t));
    }
    for (var, t) in &staged {
        var.set(t)?;
    }
    let mut unexpected: Vec<String> = file
        .keys()
        .filter(|k| !data.contains_key(*k))
        .cloned()
        .collect();
    unexpected.sort();
    Ok(LoadReport {
        loaded: staged.len(),
        unexpected,
    })
}

/// Builds the model `kind` and loads its variables from `path`.
pub fn load_model(
    path: impl AsRef<Path>,
    kind: ModelKind,
    cfg: &ModelConfig,
    dtype: DType,
    device: &Device,
) -> Result<(VarMap, Box<dyn KeypointModel>)> {
    let varmap = VarMap::new();
    let vb: VarBuilder = seeded_var_builder(&varmap, 0, dtype, device);
    let model = build_model(kind, vb, cfg)?;
    load_varmap(&varmap, path)?;
    Ok((varmap, model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::nose::{NoseTipNet, NoseTipNetConfig};
    use crate::models::resnet::{ResNet18, ResNet18Config};
    use crate::nn::init::seeded_var_builder;

    fn nose(seed: u64) -> (VarMap, NoseTipNet) {
        let vm = VarMap::new();
        let vb = seeded_var_builder(&vm, seed, DType::F32, &Device::Cpu);
        let net = NoseTipNet::new(vb, NoseTipNetConfig::default()).unwrap();
        (vm, net)
    }

    #[test]
    fn save_then_load_reproduces_outputs_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let x = Tensor::randn(0f32, 1.0, (2, 1, 60, 80), &Device::Cpu).unwrap();
        let (vm_a, a) = nose(1);
        let (vm_b, b) = nose(2);
        let ya = a
            .forward(&x, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let yb = b
            .forward(&x, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_ne!(ya, yb);
        save_varmap(&vm_a, &path).unwrap();
        // The weights and their checksum, no temporary file left.
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["model.safetensors", "model.safetensors.sha256"]);
        let report = load_varmap(&vm_b, &path).unwrap();
        assert_eq!(report.loaded, 10);
        assert!(report.unexpected.is_empty());
        let yb = b
            .forward(&x, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(ya, yb);
        // Overwriting an existing file works (rename over it).
        save_varmap(&vm_b, &path).unwrap();
    }

    #[test]
    fn batch_norm_buffers_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resnet.safetensors");
        let cfg = ResNet18Config {
            num_outputs: 4,
            ..Default::default()
        };
        let build = |seed| {
            let vm = VarMap::new();
            let vb = seeded_var_builder(&vm, seed, DType::F32, &Device::Cpu);
            let net = ResNet18::new(vb, cfg).unwrap();
            (vm, net)
        };
        let x = Tensor::randn(0f32, 1.0, (2, 1, 32, 32), &Device::Cpu).unwrap();
        let (vm_a, a) = build(3);
        a.forward(&x, true).unwrap(); // moves the running statistics
        a.forward(&x, true).unwrap();
        save_varmap(&vm_a, &path).unwrap();
        let (vm_b, b) = build(4);
        load_varmap(&vm_b, &path).unwrap();
        let ya = a.forward(&x, false).unwrap().to_vec2::<f32>().unwrap();
        let yb = b.forward(&x, false).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(ya, yb);
        let st = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        let nbt = &st["layer2.0.downsample.1.num_batches_tracked"];
        assert_eq!(
            (nbt.dtype(), nbt.to_scalar::<i64>().unwrap()),
            (DType::I64, 2)
        );
        assert_eq!(st.len(), 122);
    }

    #[test]
    fn load_errors_leave_the_model_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("small.safetensors");
        let other = VarMap::new();
        let vb = seeded_var_builder(&other, 0, DType::F32, &Device::Cpu);
        let cfg = NoseTipNetConfig {
            hidden: 8,
            ..Default::default()
        };
        NoseTipNet::new(vb, cfg).unwrap();
        save_varmap(&other, &path).unwrap();
        let (vm, _) = nose(5);
        let before = vm.data().lock().unwrap()["conv.0.weight"]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let err = load_varmap(&vm, &path).unwrap_err();
        assert!(matches!(err, Error::TensorShape { .. }), "{err}");
        let after = vm.data().lock().unwrap()["conv.0.weight"]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(before, after);
        assert!(load_varmap(&vm, dir.path().join("missing.safetensors")).is_err());
        // A file lacking a variable.
        let partial = dir.path().join("partial.safetensors");
        let t = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
        save_tensors(&[("x".to_string(), t)], &partial).unwrap();
        assert!(matches!(
            load_varmap(&vm, &partial).unwrap_err(),
            Error::MissingTensor { .. }
        ));
    }

    #[test]
    fn a_weights_file_changed_after_it_was_written_is_refused_by_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let (vm, _) = nose(3);
        save_varmap(&vm, &path).unwrap();
        // `sha256sum -c` format: the hex digest, two spaces, the file name.
        let line = std::fs::read_to_string(checksum_path(&path)).unwrap();
        assert!(
            line.ends_with("  model.safetensors\n") && line.find(' ') == Some(64),
            "{line}"
        );
        let (other, _) = nose(4);
        load_varmap(&other, &path).unwrap();
        // One flipped byte in the last tensor's data: refused, nothing loaded.
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 2] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let err = load_varmap(&other, &path).unwrap_err();
        assert!(matches!(err, Error::Checksum { .. }), "{err}");
        assert!(
            err.to_string().contains("model.safetensors.sha256"),
            "{err}"
        );
        // Without a checksum file (older runs, files from elsewhere) the file is read as it is.
        std::fs::remove_file(checksum_path(&path)).unwrap();
        assert!(load_varmap(&other, &path).is_ok());
    }

    #[test]
    fn load_model_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let (vm, net) = nose(9);
        save_varmap(&vm, &path).unwrap();
        let cfg = ModelConfig::for_model(ModelKind::NoseTipNet);
        let (_, model) =
            load_model(&path, ModelKind::NoseTipNet, &cfg, DType::F32, &Device::Cpu).unwrap();
        let x = Tensor::ones((1, 1, 60, 80), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(
            net.forward(&x, false).unwrap().to_vec2::<f32>().unwrap(),
            model.forward(&x, false).unwrap().to_vec2::<f32>().unwrap()
        );
    }

    #[test]
    fn f16_files_halve_the_floats_keep_integers_and_load_into_f32_variables() {
        let dir = tempfile::tempdir().unwrap();
        let (f32_path, f16_path) = (
            dir.path().join("a.safetensors"),
            dir.path().join("h.safetensors"),
        );
        let vm = VarMap::new();
        let vb = seeded_var_builder(&vm, 3, DType::F32, &Device::Cpu);
        ResNet18::new(vb, ResNet18Config::default()).unwrap();
        save_varmap(&vm, &f32_path).unwrap();
        convert_floats(&f32_path, &f16_path, DType::F16).unwrap();
        let file = candle_core::safetensors::load(&f16_path, &Device::Cpu).unwrap();
        let counters: Vec<_> = file.iter().filter(|(_, t)| !t.dtype().is_float()).collect();
        assert!(!counters.is_empty(), "ResNet18 keeps num_batches_tracked");
        assert!(counters.iter().all(|(_, t)| t.dtype() == DType::I64));
        assert!(file
            .values()
            .filter(|t| t.dtype().is_float())
            .all(|t| t.dtype() == DType::F16));
        let (a, h) = (
            std::fs::metadata(&f32_path).unwrap().len(),
            std::fs::metadata(&f16_path).unwrap().len(),
        );
        assert!(h * 100 < a * 51, "{h} bytes of f16 for {a} of f32");

        // Loaded into f32 variables, each weight is its f16 rounding (relative error <= 2^-11).
        let other = VarMap::new();
        let vb = seeded_var_builder(&other, 4, DType::F32, &Device::Cpu);
        ResNet18::new(vb, ResNet18Config::default()).unwrap();
        let bytes = std::fs::read(&f16_path).unwrap();
        load_varmap_bytes(&other, &bytes, &f16_path).unwrap();
        let name = "conv1.weight";
        let get = |m: &VarMap| {
            m.data().lock().unwrap()[name]
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let (want, got) = (get(&vm), get(&other));
        assert_ne!(want, got, "f16 rounds the weights");
        for (w, g) in want.iter().zip(&got) {
            assert!((w - g).abs() <= w.abs() * 4.9e-4 + 1e-7, "{w} vs {g}");
        }
    }

    #[test]
    fn weights_holding_a_nan_are_refused_by_name_and_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let (vm_a, _) = nose(1);
        let poisoned: Vec<(String, Tensor)> = vm_a
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let t = v.as_tensor().clone();
                let t = if k == "mlp.2.bias" {
                    (t * f64::NAN).unwrap()
                } else {
                    t
                };
                (k.clone(), t)
            })
            .collect();
        save_tensors(&poisoned, &path).unwrap();
        let (vm_b, _) = nose(2);
        let before = vm_b.data().lock().unwrap()["mlp.2.bias"]
            .as_tensor()
            .to_vec1::<f32>()
            .unwrap();
        let err = load_varmap(&vm_b, &path).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::NonFinite { .. }), "{msg}");
        assert!(
            msg.contains("model.safetensors") && msg.contains("mlp.2.bias") && msg.contains("NaN"),
            "{msg}"
        );
        let after = vm_b.data().lock().unwrap()["mlp.2.bias"]
            .as_tensor()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(before, after);
    }
}
