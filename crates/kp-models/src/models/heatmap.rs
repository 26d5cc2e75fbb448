//! Heatmap regression: a ResNet18 backbone, an upsampling head giving one heatmap per keypoint
//! at a quarter of the input resolution (56x56 for 224x224), a differentiable soft-argmax
//! decoder (integral regression) and Gaussian target heatmaps.
//!
//! Coordinates are normalised like the rest of the workspace: `u = x / W`, `v = y / H` with
//! `x, y` in input pixels, pixel centres at integers. Heatmap cell `j` of a `w`-cell-wide map
//! over a `W`-pixel input is centred on input pixel `(j + 0.5) * W / w - 0.5`
//! ([`HeatmapGrid`]).
//!
//! Inputs whose sides are not a multiple of the backbone's stride (80x60 and 160x120 for the
//! IMM tasks) are padded with zeros on the right and bottom to the next multiple; the heatmaps
//! then cover the padded image, and the grid ([`HeatmapGrid::padded`]) still normalises by the
//! real input, so decoding and targets both use the real image's coordinates.

use candle_core::{DType, Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::models::resnet::{ResNet18, ResNet18Config};
use crate::nn::batchnorm::{BatchNorm2d, BatchNormConfig};
use crate::nn::conv::{Conv2d, Conv2dConfig, ConvInit};
use crate::nn::sequential::Sequential;
use crate::nn::upsample::Upsample;
use crate::onnx::graph::{Attr, OnnxGraph};
use crate::summary::{Describe, ModuleNode};

/// The geometry linking a heatmap to the network input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeatmapGrid {
    /// Heatmap `(width, height)` in cells.
    pub heatmap: (usize, usize),
    /// Input `(width, height)` in pixels: coordinates are normalised by it.
    pub input: (usize, usize),
    /// `(width, height)` in pixels the heatmap covers: the input plus its zero padding on the
    /// right and bottom (equal to `input` without padding).
    pub covered: (usize, usize),
}

/// One axis of a [`HeatmapGrid`]: `cells` cells over `covered` pixels, normalised by `pixels`.
#[derive(Clone, Copy)]
struct GridAxis {
    cells: usize,
    covered: usize,
    pixels: usize,
}

impl GridAxis {
    /// Normalised coordinate of the centre of cell `j`.
    fn cell_to_norm(self, j: f64) -> f64 {
        ((j + 0.5) * self.covered as f64 / self.cells as f64 - 0.5) / self.pixels as f64
    }

    /// Cell coordinate (fractional) of normalised coordinate `u`: `u * scale + offset`.
    fn norm_to_cell(self, u: f64) -> f64 {
        let (scale, offset) = self.norm_to_cell_affine();
        u * scale + offset
    }

    /// `(scale, offset)` of [`Self::norm_to_cell`].
    fn norm_to_cell_affine(self) -> (f64, f64) {
        let per_pixel = self.cells as f64 / self.covered as f64;
        (self.pixels as f64 * per_pixel, 0.5 * per_pixel - 0.5)
    }
}

impl HeatmapGrid {
    /// A grid of `heatmap` cells over an `input`-pixel image, both `(width, height)`.
    pub fn new(heatmap: (usize, usize), input: (usize, usize)) -> Self {
        Self::padded(heatmap, input, input)
    }

    /// A grid of `heatmap` cells over `covered` pixels: an `input`-pixel image zero-padded on
    /// the right and bottom. Coordinates stay normalised by `input`.
    pub fn padded(heatmap: (usize, usize), input: (usize, usize), covered: (usize, usize)) -> Self {
        Self {
            heatmap,
            input,
            covered,
        }
    }

    fn x_axis(&self) -> GridAxis {
        GridAxis {
            cells: self.heatmap.0,
            covered: self.covered.0,
            pixels: self.input.0,
        }
    }

    fn y_axis(&self) -> GridAxis {
        GridAxis {
            cells: self.heatmap.1,
            covered: self.covered.1,
            pixels: self.input.1,
        }
    }

    /// Normalised `(u, v)` of the centre of heatmap cell `(col, row)`.
    pub fn cell_center(&self, col: f64, row: f64) -> (f64, f64) {
        (
            self.x_axis().cell_to_norm(col),
            self.y_axis().cell_to_norm(row),
        )
    }

    /// Fractional heatmap `(col, row)` of normalised `(u, v)`.
    pub fn to_cells(&self, u: f64, v: f64) -> (f64, f64) {
        (self.x_axis().norm_to_cell(u), self.y_axis().norm_to_cell(v))
    }

    fn check(&self) -> Result<()> {
        let sizes = [self.heatmap, self.input, self.covered];
        if sizes.iter().any(|&(w, h)| w == 0 || h == 0) {
            return Err(Error::Config(format!("empty heatmap grid {self:?}")));
        }
        Ok(())
    }

    /// Normalised coordinate of every cell centre along x `(w values)` and y `(h values)`.
    fn axis_values(&self) -> (Vec<f64>, Vec<f64>) {
        let (w, h) = self.heatmap;
        let (xa, ya) = (self.x_axis(), self.y_axis());
        (
            (0..w).map(|j| xa.cell_to_norm(j as f64)).collect(),
            (0..h).map(|i| ya.cell_to_norm(i as f64)).collect(),
        )
    }

    /// [`Self::axis_values`] as tensors.
    fn axes(&self, dtype: DType, device: &candle_core::Device) -> Result<(Tensor, Tensor)> {
        let (w, h) = self.heatmap;
        let (xs, ys) = self.axis_values();
        Ok((
            Tensor::from_vec(xs, w, device)?.to_dtype(dtype)?,
            Tensor::from_vec(ys, h, device)?.to_dtype(dtype)?,
        ))
    }
}

/// Soft-argmax (integral regression): `softmax(beta * heatmap)` over each map, then the
/// expected normalised coordinates. `heatmaps` is `(B, K, h, w)`; the result is `(B, 2K)` in the
/// order `x0, y0, x1, y1, ...`. Differentiable; `grid.heatmap` must equal `(w, h)`.
pub fn soft_argmax(heatmaps: &Tensor, beta: f64, grid: HeatmapGrid) -> Result<Tensor> {
    grid.check()?;
    let (b, k, h, w) = heatmaps.dims4()?;
    if (w, h) != grid.heatmap {
        return Err(Error::Shape(format!(
            "soft-argmax: heatmaps are {w}x{h}, the grid says {:?}",
            grid.heatmap
        )));
    }
    let logits = (heatmaps.reshape((b, k, h * w))? * beta)?;
    let p = candle_nn::ops::softmax(&logits, D::Minus1)?.reshape((b, k, h, w))?;
    let (xs, ys) = grid.axes(p.dtype(), p.device())?;
    let px = p.sum(2)?; // (B, K, w)
    let py = p.sum(3)?; // (B, K, h)
    let x = px.broadcast_mul(&xs.reshape((1, 1, w))?)?.sum_keepdim(2)?;
    let y = py.broadcast_mul(&ys.reshape((1, 1, h))?)?.sum_keepdim(2)?;
    Ok(Tensor::cat(&[x, y], 2)?.reshape((b, 2 * k))?)
}

/// [`soft_argmax`] as ONNX nodes: the `(N, K, h, w)` heatmaps `hm` are flattened per map,
/// scaled by `beta`, `Softmax`ed, and multiplied (`MatMul`) by the `(h w, 2)` table of every
/// cell's normalised `(x, y)`, which is the expectation of both coordinates at once. Returns
/// the `(N, 2K)` coordinates.
pub fn soft_argmax_to_onnx(
    g: &mut OnnxGraph,
    hm: &str,
    keypoints: usize,
    beta: f64,
    grid: HeatmapGrid,
) -> Result<String> {
    grid.check()?;
    let (w, h) = grid.heatmap;
    let (xs, ys) = grid.axis_values();
    let mut table = Vec::with_capacity(2 * w * h);
    for &y in &ys {
        for &x in &xs {
            table.push(x as f32);
            table.push(y as f32);
        }
    }
    let k = keypoints as i64;
    let mut logits = g.reshape(hm, &[-1, k, (w * h) as i64]);
    if beta != 1.0 {
        let b = g.floats(
            &format!("{}.beta", g.next_name("Mul")),
            &[1],
            &[beta as f32],
        )?;
        logits = g.mul(&logits, &b);
    }
    let p = g.node("Softmax", &[&logits], vec![Attr::Int("axis", 2)]);
    let cells = g.floats(
        &format!("{}.cells", g.next_name("MatMul")),
        &[w * h, 2],
        &table,
    )?;
    let xy = g.node("MatMul", &[&p, &cells], Vec::new());
    Ok(g.reshape(&xy, &[-1, 2 * k]))
}

/// [`soft_argmax`] for prediction: on the CPU in f32 one pass per heatmap
/// ([`kp_ops::softargmax`], no gradient), elsewhere [`soft_argmax`] itself. Equal to it within
/// float rounding.
pub fn soft_argmax_predict(heatmaps: &Tensor, beta: f64, grid: HeatmapGrid) -> Result<Tensor> {
    grid.check()?;
    let (_, _, h, w) = heatmaps.dims4()?;
    let fast = kp_ops::dispatch::uses_cpu_kernels(heatmaps.device())
        && heatmaps.dtype() == DType::F32
        && (w, h) == grid.heatmap;
    if !fast {
        return soft_argmax(heatmaps, beta, grid);
    }
    let (xs, ys) = grid.axis_values();
    let narrow = |v: Vec<f64>| -> Vec<f32> { v.into_iter().map(|c| c as f32).collect() };
    let (xs, ys) = (narrow(xs), narrow(ys));
    Ok(kp_ops::softargmax::soft_argmax(
        heatmaps,
        beta as f32,
        &xs,
        &ys,
    )?)
}

/// Gaussian target heatmaps `(B, K, h, w)` for normalised points `(B, 2K)` (`x0, y0, ...`) or
/// `(B, K, 2)`: `exp(-d^2 / (2 sigma^2))` with `d` in heatmap cells, peak 1 at the point.
pub fn gaussian_heatmaps(points: &Tensor, grid: HeatmapGrid, sigma: f64) -> Result<Tensor> {
    grid.check()?;
    if sigma <= 0.0 {
        return Err(Error::Config(format!(
            "gaussian sigma must be positive, got {sigma}"
        )));
    }
    let pts = match points.rank() {
        2 => {
            let (b, n) = points.dims2()?;
            if n % 2 != 0 {
                return Err(Error::Shape(format!("points (B, 2K) has odd width {n}")));
            }
            points.reshape((b, n / 2, 2))?
        }
        3 if points.dim(2)? == 2 => points.clone(),
        _ => {
            return Err(Error::Shape(format!(
                "points must be (B, 2K) or (B, K, 2), got {:?}",
                points.dims()
            )))
        }
    };
    let (b, k, _) = pts.dims3()?;
    let (w, h) = grid.heatmap;
    let dtype = pts.dtype();
    let dev = pts.device();
    let (ax, cx) = grid.x_axis().norm_to_cell_affine();
    let (ay, cy) = grid.y_axis().norm_to_cell_affine();
    let px = pts.narrow(2, 0, 1)?.affine(ax, cx)?.reshape((b, k, 1, 1))?;
    let py = pts.narrow(2, 1, 1)?.affine(ay, cy)?.reshape((b, k, 1, 1))?;
    let cols = Tensor::arange(0u32, w as u32, dev)?
        .to_dtype(dtype)?
        .reshape((1, 1, 1, w))?;
    let rows = Tensor::arange(0u32, h as u32, dev)?
        .to_dtype(dtype)?
        .reshape((1, 1, h, 1))?;
    let dx2 = cols.broadcast_sub(&px)?.sqr()?; // (B, K, 1, w)
    let dy2 = rows.broadcast_sub(&py)?.sqr()?; // (B, K, h, 1)
    let d2 = dx2.broadcast_add(&dy2)?;
    Ok((d2 * (-0.5 / (sigma * sigma)))?.exp()?)
}

/// Heatmap logits `(B, K, h, w)` with how a network decodes them ([`soft_argmax`] of `beta`
/// times the logits over `grid`): what [`crate::KeypointModel::forward_decoded`] returns beside
/// the coordinates, for a loss on the heatmaps' shape.
#[derive(Debug, Clone)]
pub struct DecodedHeatmaps {
    /// The logits, `(B, K, h, w)`.
    pub logits: Tensor,
    /// Softmax sharpness.
    pub beta: f64,
    /// The heatmap's place on the input.
    pub grid: HeatmapGrid,
}

impl DecodedHeatmaps {
    /// The coordinates [`soft_argmax`] decodes from `logits` (normalised, `(B, 2K)`), and the
    /// heatmaps as decoded: what every heatmap network's `forward_decoded` returns.
    pub fn decode(logits: Tensor, beta: f64, grid: HeatmapGrid) -> Result<(Tensor, Self)> {
        let coords = soft_argmax(&logits, beta, grid)?;
        Ok((coords, Self { logits, beta, grid }))
    }

    /// Mean over faces and keypoints of `KL(G || softmax(beta * logits))`, where `G` is the
    /// Gaussian of `sigma` cells around the target point (normalised points `(B, 2K)` as
    /// [`gaussian_heatmaps`] reads them), scaled to sum 1 over the map. Differentiable in the
    /// logits; 0 when the softmax is that Gaussian.
    ///
    /// Why: soft-argmax trains only the mean of each map, and many maps have the right mean (a
    /// blob at the point, or two blobs either side of it, or a wide smear). DSNT's regulariser
    /// (Nibali et al. 2018, "Numerical coordinate regression with convolutional neural
    /// networks", sigma 1 cell) pulls each map towards one peak at the point. They measured the
    /// Jensen-Shannon form; this is the KL form, whose gradient in the logits is simply
    /// `beta (softmax - G) / (B K)`. A point far outside the map has a Gaussian that underflows
    /// to zero: it adds nothing.
    pub fn gaussian_divergence(&self, points: &Tensor, sigma: f64) -> Result<Tensor> {
        let (b, k, h, w) = self.logits.dims4()?;
        if (w, h) != self.grid.heatmap {
            return Err(Error::Shape(format!(
                "heatmap divergence: heatmaps are {w}x{h}, the grid says {:?}",
                self.grid.heatmap
            )));
        }
        let target = gaussian_heatmaps(points, self.grid, sigma)?
            .to_dtype(self.logits.dtype())?
            .reshape((b, k, h * w))?;
        let mass = (target.sum_keepdim(2)? + 1e-30)?;
        let target = target.broadcast_div(&mass)?.detach();
        let logits = (self.logits.reshape((b, k, h * w))? * self.beta)?;
        let log_p = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let log_t = (&target + 1e-30)?.log()?;
        let kl = (&target * (log_t - log_p)?)?.sum(2)?; // (B, K)
        Ok(kl.mean_all()?)
    }
}

/// The 1x1 convolution (with bias, PyTorch's default initialisation) that turns `channels`
/// features into one heatmap logit per keypoint: the last layer of every heatmap network.
pub(crate) fn heatmap_layer(vb: VarBuilder, channels: usize, keypoints: usize) -> Result<Conv2d> {
    Conv2d::new(
        vb,
        channels,
        keypoints,
        1,
        Conv2dConfig::default(),
        ConvInit::TorchDefault,
    )
}

/// Sizes of a [`HeatmapNet`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HeatmapConfig {
    /// Input channels (1).
    pub in_channels: usize,
    /// Keypoints, one heatmap each (68).
    pub num_keypoints: usize,
    /// Input width (224).
    pub width: usize,
    /// Input height (224).
    pub height: usize,
    /// ResNet18 stages used as the backbone (3: stride 16, or 4: stride 32).
    pub backbone_stages: usize,
    /// Channels of each upsampling stage.
    pub head_channels: usize,
    /// Softmax sharpness of the soft-argmax decoder.
    pub beta: f64,
}

impl Default for HeatmapConfig {
    fn default() -> Self {
        Self {
            in_channels: 1,
            num_keypoints: 68,
            width: 224,
            height: 224,
            backbone_stages: 3,
            head_channels: 128,
            beta: 1.0,
        }
    }
}

impl HeatmapConfig {
    /// Total downsampling of the backbone: 8, 16 or 32 for 2, 3 or 4 stages.
    pub fn stride(&self) -> usize {
        2usize << self.backbone_stages
    }

    /// Input `(width, height)` after zero padding to a multiple of [`Self::stride`].
    pub fn padded_size(&self) -> (usize, usize) {
        let s = self.stride();
        (self.width.div_ceil(s) * s, self.height.div_ceil(s) * s)
    }

    /// Heatmap `(width, height)`: a quarter of the (padded) input.
    pub fn heatmap_size(&self) -> (usize, usize) {
        let (w, h) = self.padded_size();
        (w / 4, h / 4)
    }

    /// The grid used to decode and to make targets: cells over the padded input, coordinates
    /// normalised by the real one.
    pub fn grid(&self) -> HeatmapGrid {
        HeatmapGrid::padded(
            self.heatmap_size(),
            (self.width, self.height),
            self.padded_size(),
        )
    }
}

/// ResNet18 backbone + (Upsample x2, 3x3 Conv, BN, ReLU) stages up to stride 4 + a 1x1 conv
/// to one heatmap per keypoint.
#[derive(Debug, Clone)]
pub struct HeatmapNet {
    config: HeatmapConfig,
    backbone: ResNet18,
    head: Sequential,
    final_layer: Conv2d,
}

impl HeatmapNet {
    /// Builds the network under `vb` (`backbone.*`, `head.*`, `final_layer.*`).
    pub fn new(vb: VarBuilder, config: HeatmapConfig) -> Result<Self> {
        if !(2..=4).contains(&config.backbone_stages)
            || config.num_keypoints == 0
            || config.head_channels == 0
        {
            return Err(Error::Config(format!(
                "heatmap net needs 2..=4 backbone stages, keypoints and head channels ({config:?})"
            )));
        }
        if config.width == 0 || config.height == 0 {
            return Err(Error::Config(format!(
                "heatmap net input {}x{} is empty",
                config.width, config.height
            )));
        }
        let bcfg = ResNet18Config {
            in_channels: config.in_channels,
            num_outputs: 0,
            stages: config.backbone_stages,
            head: false,
        };
        let backbone = ResNet18::new(vb.pp("backbone"), bcfg)?;
        let vh = vb.pp("head");
        let mut head = Sequential::new();
        let mut c = bcfg.feature_channels();
        for _ in 0..config.backbone_stages - 1 {
            head.push(Upsample { scale: 2 });
            let conv_cfg = Conv2dConfig {
                stride: 1,
                padding: 1,
                bias: false,
            };
            head.push(Conv2d::new(
                vh.pp(head.next_index()),
                c,
                config.head_channels,
                3,
                conv_cfg,
                ConvInit::KaimingNormalFanOut,
            )?);
            head.push(BatchNorm2d::new(
                vh.pp(head.next_index()),
                config.head_channels,
                BatchNormConfig::default(),
            )?);
            head.push_relu(true);
            c = config.head_channels;
        }
        let final_layer = heatmap_layer(vb.pp("final_layer"), c, config.num_keypoints)?;
        Ok(Self {
            config,
            backbone,
            head,
            final_layer,
        })
    }

    /// The sizes.
    pub fn config(&self) -> &HeatmapConfig {
        &self.config
    }

    /// Heatmap logits `(B, K, Hp/4, Wp/4)` over the zero-padded input (`Hp`, `Wp`: sides rounded
    /// up to a multiple of the stride, see [`HeatmapConfig::padded_size`]).
    pub fn forward_heatmaps(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        if (w, h) != (self.config.width, self.config.height) {
            return Err(Error::Shape(format!(
                "heatmap net expects {}x{} inputs, got {w}x{h}",
                self.config.width, self.config.height
            )));
        }
        let (wp, hp) = self.config.padded_size();
        let padded;
        let x = if (wp, hp) == (w, h) {
            x
        } else {
            padded = x
                .pad_with_zeros(3, 0, wp - w)?
                .pad_with_zeros(2, 0, hp - h)?;
            &padded
        };
        let f = self.backbone.features(x, train)?;
        let f = self.head.forward(&f, train)?;
        self.final_layer.forward(&f)
    }

    /// Normalised coordinates `(B, 2K)` decoded with [`soft_argmax`] (relative to the real,
    /// unpadded input).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.forward_decoded(x, train)?.0)
    }

    /// [`Self::forward`] and the heatmaps it decoded.
    pub fn forward_decoded(&self, x: &Tensor, train: bool) -> Result<(Tensor, DecodedHeatmaps)> {
        DecodedHeatmaps::decode(
            self.forward_heatmaps(x, train)?,
            self.config.beta,
            self.config.grid(),
        )
    }

    /// [`Self::forward`] in evaluation mode as ONNX nodes: `Pad` (when the input is not a
    /// multiple of the stride), backbone, head, final 1x1 convolution, soft-argmax.
    pub fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String> {
        let (w, h) = (self.config.width, self.config.height);
        let (wp, hp) = self.config.padded_size();
        let mut x = x.to_string();
        if (wp, hp) != (w, h) {
            let base = g.next_name("Pad");
            let pads = g.ints(
                &format!("{base}.pads"),
                &[0, 0, 0, 0, 0, 0, (hp - h) as i64, (wp - w) as i64],
            );
            x = g.node("Pad", &[&x, &pads], vec![Attr::Str("mode", "constant")]);
        }
        let f = self.backbone.features_to_onnx(g, &x)?;
        let f = self.head.to_onnx(g, &f)?;
        let hm = self.final_layer.to_onnx(g, &f)?;
        soft_argmax_to_onnx(
            g,
            &hm,
            self.config.num_keypoints,
            self.config.beta,
            self.config.grid(),
        )
    }
}

impl Describe for HeatmapNet {
    fn describe(&self) -> ModuleNode {
        ModuleNode::container(
            "HeatmapNet",
            vec![
                ("backbone".into(), self.backbone.describe()),
                ("head".into(), self.head.describe()),
                ("final_layer".into(), self.final_layer.describe()),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use candle_nn::VarMap;

    #[test]
    fn heatmap_divergence_is_zero_at_the_target_gaussian_and_grows_away_from_it() {
        let dev = Device::Cpu;
        let grid = HeatmapGrid::new((16, 12), (64, 48));
        let pts = Tensor::new(&[[0.3f64, 0.6, 0.7, 0.4], [0.5, 0.5, 0.2, 0.8]], &dev).unwrap();
        let decoded = |logits: Tensor| DecodedHeatmaps {
            logits,
            beta: 1.0,
            grid,
        };
        let kl = |logits: Tensor| {
            decoded(logits)
                .gaussian_divergence(&pts, 1.0)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        // Logits equal to the Gaussian's logarithm: the softmax is the normalised Gaussian.
        let g = gaussian_heatmaps(&pts, grid, 1.0).unwrap();
        assert!(kl(g.log().unwrap()).abs() < 1e-9);
        // A flat map, a peak one cell off, a peak at the point but wider: all worse, the flat
        // map the worst.
        let flat = kl(Tensor::zeros((2, 2, 12, 16), DType::F64, &dev).unwrap());
        let off = kl(gaussian_heatmaps(&(&pts + 1.0 / 16.0).unwrap(), grid, 1.0)
            .unwrap()
            .log()
            .unwrap());
        let wide = kl(gaussian_heatmaps(&pts, grid, 2.5).unwrap().log().unwrap());
        assert!(
            off > 0.1 && wide > 0.1 && flat > off.max(wide),
            "{off} {wide} {flat}"
        );
        // A point far outside the map has no Gaussian on it: it adds nothing (the other points
        // sit at their targets, so the sum stays zero), and no NaN.
        let far = Tensor::new(&[[0.3f64, 0.6, 40.0, -40.0], [0.5, 0.5, 0.2, 0.8]], &dev).unwrap();
        let v = decoded(g.log().unwrap())
            .gaussian_divergence(&far, 1.0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(v.is_finite() && v.abs() < 1e-9, "{v}");
        // The wrong grid is refused.
        let bad = DecodedHeatmaps {
            grid: HeatmapGrid::new((8, 6), (64, 48)),
            ..decoded(g.clone())
        };
        assert!(bad.gaussian_divergence(&pts, 1.0).is_err());
    }

    #[test]
    fn heatmap_divergence_gradients_match_finite_differences() {
        let dev = Device::Cpu;
        let grid = HeatmapGrid::new((6, 5), (24, 20));
        let pts = Tensor::new(&[[0.4f64, 0.55]], &dev).unwrap();
        let values: Vec<f64> = (0..30).map(|i| ((i * 7 % 11) as f64 - 5.0) * 0.3).collect();
        let v = Var::from_vec(values, (1, 1, 5, 6), &dev).unwrap();
        let objective = || {
            let hm = DecodedHeatmaps {
                logits: v.as_tensor().clone(),
                beta: 1.7,
                grid,
            };
            Ok(hm.gaussian_divergence(&pts, 1.0).unwrap())
        };
        let config = crate::GradCheckConfig {
            eps: 1e-6,
            max_entries: 30,
            ..Default::default()
        };
        let report = crate::check_gradients(&[("logits", &v)], objective, &config).unwrap();
        assert!(report.passed(), "{}", report.describe());
    }

    #[test]
    fn grid_round_trip_and_centres() {
        let g = HeatmapGrid::new((56, 56), (224, 224));
        // Cell 0 covers input pixels 0..=3, centred on 1.5.
        let (u, v) = g.cell_center(0.0, 10.0);
        assert!((u - 1.5 / 224.0).abs() < 1e-12);
        assert!((v - 41.5 / 224.0).abs() < 1e-12);
        let (c, r) = g.to_cells(u, v);
        assert!((c - 0.0).abs() < 1e-12 && (r - 10.0).abs() < 1e-12);
    }

    #[test]
    fn gaussian_peaks_where_soft_argmax_decodes() {
        let dev = Device::Cpu;
        let g = HeatmapGrid::new((32, 24), (128, 96));
        let pts = Tensor::new(&[[0.3f64, 0.6, 0.75, 0.45]], &dev).unwrap();
        let hm = gaussian_heatmaps(&pts, g, 1.5).unwrap();
        assert_eq!(hm.dims(), [1, 2, 24, 32]);
        // Peak cell of keypoint 0 is the rounded cell coordinate.
        let (c, r) = g.to_cells(0.3, 0.6);
        let v = hm.get(0).unwrap().get(0).unwrap().to_vec2::<f64>().unwrap();
        let (mut best, mut bi) = (f64::MIN, (0, 0));
        for (i, row) in v.iter().enumerate() {
            for (j, &x) in row.iter().enumerate() {
                if x > best {
                    best = x;
                    bi = (i, j);
                }
            }
        }
        assert_eq!(bi, (r.round() as usize, c.round() as usize));
        // A sharp softmax of log-heatmaps recovers the points (symmetric Gaussians, away from
        // the borders).
        let logits = hm.clamp(1e-300, 1.0).unwrap().log().unwrap();
        let dec = soft_argmax(&logits, 1.0, g)
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        for (a, b) in dec[0].iter().zip([0.3, 0.6, 0.75, 0.45]) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn soft_argmax_uniform_is_centre_and_differentiable() {
        let dev = Device::Cpu;
        let g = HeatmapGrid::new((8, 8), (32, 32));
        let hm = Var::zeros((1, 1, 8, 8), DType::F32, &dev).unwrap();
        let c = soft_argmax(hm.as_tensor(), 1.0, g).unwrap();
        let v = c.to_vec2::<f32>().unwrap();
        let centre = 15.5 / 32.0;
        assert!((v[0][0] - centre).abs() < 1e-6 && (v[0][1] - centre).abs() < 1e-6);
        let grads = c
            .narrow(1, 0, 1)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gx = grads
            .get(hm.as_tensor())
            .unwrap()
            .squeeze(0)
            .unwrap()
            .squeeze(0)
            .unwrap();
        let gx = gx.to_vec2::<f32>().unwrap();
        // Raising a right-hand cell moves x to the right, a left-hand cell to the left.
        assert!(gx[3][7] > 0.0 && gx[3][0] < 0.0);
        assert!(soft_argmax(hm.as_tensor(), 1.0, HeatmapGrid::new((4, 4), (32, 32))).is_err());
    }

    #[test]
    fn net_shapes_and_names() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let cfg = HeatmapConfig {
            width: 64,
            height: 48,
            num_keypoints: 5,
            head_channels: 16,
            ..Default::default()
        };
        let net = HeatmapNet::new(vb, cfg).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 1, 48, 64), &Device::Cpu).unwrap();
        assert_eq!(
            net.forward_heatmaps(&x, true).unwrap().dims(),
            [2, 5, 12, 16]
        );
        let y = net.forward(&x, false).unwrap();
        assert_eq!(y.dims(), [2, 10]);
        let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(y.iter().all(|v| (0.0..=1.0).contains(v)));
        let data = vm.data().lock().unwrap();
        for name in [
            "backbone.conv1.weight",
            "backbone.layer3.1.bn2.running_var",
            "head.1.weight",
            "head.2.running_mean",
            "head.5.weight",
            "final_layer.weight",
            "final_layer.bias",
        ] {
            assert!(data.contains_key(name), "{name}");
        }
        assert!(!data.keys().any(|k| k.contains("layer4")));
        assert_eq!(HeatmapConfig::default().heatmap_size(), (56, 56));
    }

    #[test]
    fn padded_inputs_decode_in_real_coordinates() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let cfg = HeatmapConfig {
            width: 80,
            height: 60,
            num_keypoints: 2,
            head_channels: 8,
            beta: 50.0,
            ..Default::default()
        };
        assert_eq!(cfg.padded_size(), (80, 64));
        assert_eq!(cfg.heatmap_size(), (20, 16));
        let net = HeatmapNet::new(vb, cfg).unwrap();
        let x = Tensor::randn(0f32, 1.0, (3, 1, 60, 80), &Device::Cpu).unwrap();
        assert_eq!(
            net.forward_heatmaps(&x, false).unwrap().dims(),
            [3, 2, 16, 20]
        );
        assert_eq!(net.forward(&x, true).unwrap().dims(), [3, 4]);
        // Points on cell centres (pixel 4j + 1.5), normalised by the real 80x60 input: the
        // targets' peaks sit in the right cells of the padded 80x64 frame and decode back.
        let (px, py) = ([29.5f32, 61.5], [41.5f32, 5.5]);
        let want = [px[0] / 80.0, py[0] / 60.0, px[1] / 80.0, py[1] / 60.0];
        let pts = Tensor::from_vec(want.to_vec(), (1, 4), &Device::Cpu).unwrap();
        let grid = cfg.grid();
        for (i, cell) in [(0, (7.0, 10.0)), (2, (15.0, 1.0))] {
            let (c, r) = grid.to_cells(want[i] as f64, want[i + 1] as f64);
            assert!(
                (c - cell.0).abs() < 1e-5 && (r - cell.1).abs() < 1e-5,
                "{c}, {r}"
            );
        }
        let hm = gaussian_heatmaps(&pts, grid, 0.5).unwrap();
        let uv = soft_argmax(&hm, cfg.beta, grid)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (got, want) in uv[0].iter().zip(want) {
            assert!((got - want).abs() < 1e-3, "{:?} vs {want:?}", uv[0]);
        }
    }
}
