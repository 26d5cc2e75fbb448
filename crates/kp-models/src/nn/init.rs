//! Weight initialisation as PyTorch does it, and reproducible (seeded) variable creation.
//!
//! candle's `conv2d`/`linear` helpers draw weights from a Kaiming *normal* with ReLU gain and the
//! conv bias from `U(±1/sqrt(in_channels))`; PyTorch's defaults (`kaiming_uniform_(a=sqrt(5))`)
//! give `U(±1/sqrt(fan_in))` for both weight and bias with `fan_in = in_channels * k * k`. The
//! layers of this crate use [`torch_default`] instead. torchvision's ResNet overrides convs with
//! [`kaiming_normal_fan_out`].
//!
//! candle's CPU random generator cannot be seeded, so [`seeded_var_builder`] wraps a `VarMap`
//! in a backend that draws new variables from its own seeded generator: the same seed and the
//! same model give the same initial weights.

use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};

/// PyTorch's default for `Conv2d`/`Linear` weights and biases: `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.
pub fn torch_default(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// torchvision ResNet convolutions: `kaiming_normal_(mode="fan_out", nonlinearity="relu")`,
/// i.e. `N(0, 2 / (out_channels * k * k))`.
pub fn kaiming_normal_fan_out() -> Init {
    Init::Kaiming {
        dist: NormalOrUniform::Normal,
        fan: FanInOut::FanOut,
        non_linearity: NonLinearity::ReLU,
    }
}

/// A small, fast, seedable generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform sample in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A standard normal sample (Box-Muller).
    pub fn next_normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Draws a tensor for `init` from `rng`.
pub fn sample_init(
    init: &Init,
    shape: &Shape,
    dtype: DType,
    device: &Device,
    rng: &mut SplitMix64,
) -> candle_core::Result<Tensor> {
    let n = shape.elem_count();
    let values: Vec<f64> = match *init {
        Init::Const(v) => {
            return if v == 0.0 {
                Tensor::zeros(shape, dtype, device)
            } else if v == 1.0 {
                Tensor::ones(shape, dtype, device)
            } else {
                Tensor::full(v, shape, device)?.to_dtype(dtype)
            };
        }
        Init::Uniform { lo, up } => (0..n).map(|_| lo + (up - lo) * rng.next_f64()).collect(),
        Init::Randn { mean, stdev } => (0..n).map(|_| mean + stdev * rng.next_normal()).collect(),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Normal => (0..n).map(|_| std * rng.next_normal()).collect(),
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    (0..n)
                        .map(|_| bound * (2.0 * rng.next_f64() - 1.0))
                        .collect()
                }
            }
        }
    };
    Tensor::from_vec(values, shape, device)?.to_dtype(dtype)
}

/// A `VarMap` backend that creates missing variables with a seeded generator.
pub struct SeededVarMap {
    varmap: VarMap,
    rng: Mutex<SplitMix64>,
}

impl SeededVarMap {
    /// Wraps `varmap`; new variables are drawn from a generator seeded with `seed`.
    pub fn new(varmap: &VarMap, seed: u64) -> Self {
        Self {
            varmap: varmap.clone(),
            rng: Mutex::new(SplitMix64::new(seed)),
        }
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut data = self.varmap.data().lock().expect("VarMap lock poisoned");
        if let Some(var) = data.get(name) {
            if var.shape() != &s {
                candle_core::bail!("shape mismatch on {name}: {s:?} <> {:?}", var.shape())
            }
            return Ok(var.as_tensor().clone());
        }
        let tensor = {
            let mut rng = self.rng.lock().expect("rng lock poisoned");
            sample_init(&h, &s, dtype, dev, &mut rng)?
        };
        let var = Var::from_tensor(&tensor)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("`get_unchecked` is not supported by SeededVarMap ({name})")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .expect("VarMap lock poisoned")
            .contains_key(name)
    }
}

/// A `VarBuilder` over `varmap` whose new variables come from a generator seeded with `seed`
/// (reproducible initialisation, unlike `VarBuilder::from_varmap` on the CPU).
pub fn seeded_var_builder(
    varmap: &VarMap,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    VarBuilder::from_backend(
        Box::new(SeededVarMap::new(varmap, seed)),
        dtype,
        device.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_bounds_and_spread() {
        let mut rng = SplitMix64::new(1);
        let t = sample_init(
            &torch_default(9),
            &Shape::from((100, 90)),
            DType::F64,
            &Device::Cpu,
            &mut rng,
        )
        .unwrap();
        let v = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let bound = 1.0 / 3.0;
        assert!(v.iter().all(|x| x.abs() <= bound));
        let max = v.iter().cloned().fold(f64::MIN, f64::max);
        assert!(max > 0.99 * bound, "max {max}");
        // Variance of U(-b, b) is b^2 / 3.
        let var = v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64;
        assert!((var - bound * bound / 3.0).abs() < 0.05 * bound * bound / 3.0);
    }

    #[test]
    fn kaiming_fan_out_std() {
        let mut rng = SplitMix64::new(2);
        let shape = Shape::from((64, 8, 3, 3));
        let t = sample_init(
            &kaiming_normal_fan_out(),
            &shape,
            DType::F64,
            &Device::Cpu,
            &mut rng,
        )
        .unwrap();
        let v = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let var = v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64;
        let want = 2.0 / (64.0 * 9.0);
        assert!((var / want - 1.0).abs() < 0.1, "var {var} want {want}");
    }

    #[test]
    fn same_seed_same_weights() {
        let make = |seed| {
            let vm = VarMap::new();
            let vb = seeded_var_builder(&vm, seed, DType::F32, &Device::Cpu);
            vb.get_with_hints((4, 4), "w", torch_default(4))
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(make(7), make(7));
        assert_ne!(make(7), make(8));
    }
}
