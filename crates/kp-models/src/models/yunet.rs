//! YuNet, the face detector kp bundles (Wu, Peng, Yu, *YuNet: A Tiny Millisecond-level Face
//! Detector*, 2023): YuNet-n's weights run as kp layers, decoded as OpenCV's
//! `FaceDetectorYN` decodes them.
//!
//! Why kp runs it itself rather than through an ONNX runtime: the graph is 59 convolutions
//! (depthwise-separable units), 4 max-pools, 2 nearest upsamplings and 2 adds, all of which kp
//! already has as layers (plus [`kp_ops::depthwise`] and [`kp_ops::pointwise`] for the
//! depthwise-separable units' inference), so the detector
//! runs on the same engine, devices and threads as the landmark models, with no native library
//! to install. The weights come straight from the authors' ONNX file (embedded in the binary,
//! Apache-2.0, `models/yunet/`): its `Conv` nodes are read in graph order and each is checked
//! against the layer it fills (shape, groups, stride, padding), so a different file fails to
//! load instead of detecting garbage.
//!
//! The network sees a BGR image in 0-255 (no mean, no scaling), zero-padded on the right and
//! bottom to multiples of 32. Each of the three levels (strides 8, 16, 32) gives, per grid cell,
//! a class and an objectness logit, a box (centre offset, log size) and 5 points (eyes, nose tip,
//! mouth corners); [`decode`] turns them into [`Detection`]s in input pixels and [`nms`]
//! suppresses overlaps, both as `FaceDetectorYN` does (integer boxes for the overlap, stable
//! score order, `top_k`), so that kp's faces are OpenCV's faces: the tests compare them with
//! OpenCV's output on the same file and images (`tests/yunet_opencv.rs`).

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::nn::conv::{Conv2d, Conv2dConfig};
use crate::onnx::{ConvNode, ModelProto};
use crate::{MaxPool2d, Upsample};

/// The bundled YuNet-n ONNX file (opset 11, dynamic input), as published at
/// libfacedetection.train commit 0047ac24 (sha256 [`BUNDLED_SHA256`]).
pub const BUNDLED_ONNX: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../models/yunet/yunet_n_dynamic.onnx"
));

/// sha256 of [`BUNDLED_ONNX`], as in `models/yunet/README.md`.
pub const BUNDLED_SHA256: &str = "104ee26c71d5c270ce79a6b3dced91c91013260d29a6bf18f9296c5b8c4c2b12";

/// Strides of the three output levels.
pub const STRIDES: [usize; 3] = [8, 16, 32];

/// Input sides are padded to multiples of this.
pub const DIVISOR: usize = 32;

/// Decoding and suppression settings (OpenCV's `FaceDetectorYN` parameters).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YuNetConfig {
    /// Faces scoring below this are dropped (`score_threshold`).
    pub score_threshold: f32,
    /// A face overlapping a better one by more than this IoU is dropped (`nms_threshold`).
    pub nms_threshold: f32,
    /// At most this many candidates enter suppression, best first (`top_k`).
    pub top_k: usize,
}

impl Default for YuNetConfig {
    /// OpenCV's defaults: score 0.9, NMS IoU 0.3, top 5,000.
    fn default() -> Self {
        Self {
            score_threshold: 0.9,
            nms_threshold: 0.3,
            top_k: 5000,
        }
    }
}

/// One detected face, in the pixels of the image the detector ran on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// `[left, top, width, height]`.
    pub bbox: [f32; 4],
    /// Right eye, left eye, nose tip, right and left mouth corner (the subject's right is the
    /// image's left), each `[x, y]`.
    pub points5: [[f32; 2]; 5],
    /// `sqrt(class · objectness)`, in `[0, 1]`.
    pub score: f32,
}

impl Detection {
    /// The same face in an image whose axes are scaled by `1 / fx` and `1 / fy` (e.g. back to
    /// the original photo after detecting on a copy resized by `fx` across and `fy` down).
    pub fn unscaled(&self, fx: f32, fy: f32) -> Self {
        let mut d = *self;
        let [l, t, w, h] = d.bbox;
        d.bbox = [l / fx, t / fy, w / fx, h / fy];
        for p in d.points5.iter_mut() {
            *p = [p[0] / fx, p[1] / fy];
        }
        d
    }
}

/// A 1x1 convolution followed by a depthwise 3x3 (YuNet's `ConvDPUnit`), with or without a
/// ReLU after the depthwise one.
#[derive(Debug, Clone)]
struct DpUnit {
    pw_weight: Tensor,
    pw_bias: Tensor,
    dw_weight: Tensor,
    dw_bias: Tensor,
    relu: bool,
}

impl DpUnit {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = kp_ops::pointwise::pointwise_conv2d(x, &self.pw_weight, &self.pw_bias, false)?;
        Ok(kp_ops::depthwise::depthwise_conv2d(
            &y,
            &self.dw_weight,
            &self.dw_bias,
            1,
            1,
            self.relu,
        )?)
    }
}

/// The raw outputs of one level, each `(N, channels, H / s, W / s)`: class and objectness
/// logits (1 channel), box (4), points (10).
#[derive(Debug, Clone)]
pub struct LevelOutput {
    /// Class logit.
    pub cls: Tensor,
    /// Objectness logit.
    pub obj: Tensor,
    /// `dx, dy, log w, log h` in units of the stride.
    pub bbox: Tensor,
    /// 5 x `(dx, dy)` in units of the stride.
    pub kps: Tensor,
}

/// The YuNet-n network.
#[derive(Debug, Clone)]
pub struct YuNet {
    stem: Conv2d,
    /// model0's unit, then model1..model5's two units each.
    backbone: Vec<DpUnit>,
    /// Lateral units at strides 8, 16, 32.
    lateral: [DpUnit; 3],
    /// Per level: shared unit, then class, box, objectness and points heads.
    heads: [[DpUnit; 5]; 3],
    params: usize,
    device: Device,
}

/// Takes convolution nodes in graph order, each checked against the layer it fills.
struct NodeQueue {
    nodes: std::vec::IntoIter<ConvNode>,
    device: Device,
    params: usize,
}

impl NodeQueue {
    /// The next node as `(weight, bias)` tensors, checked: `(out, in / groups, k, k)`.
    fn next(
        &mut self,
        what: &str,
        (out, inp, k): (usize, usize, usize),
        (groups, stride, padding): (usize, usize, usize),
    ) -> Result<(Tensor, Tensor)> {
        let n = self.nodes.next().ok_or_else(|| {
            Error::Onnx(format!(
                "YuNet ONNX: the graph ends before the {what} convolution"
            ))
        })?;
        let want = [out, inp / groups, k, k];
        if n.weight_shape != want || (n.groups, n.stride, n.padding) != (groups, stride, padding) {
            return Err(Error::Onnx(format!(
                "YuNet ONNX: node {} ({what}) has weight {:?}, groups {}, stride {}, pads {}; \
                 kp's YuNet-n expects {want:?}, groups {groups}, stride {stride}, pads {padding}",
                n.name, n.weight_shape, n.groups, n.stride, n.padding
            )));
        }
        let bias = n
            .bias
            .ok_or_else(|| Error::Onnx(format!("YuNet ONNX: node {} has no bias", n.name)))?;
        self.params += n.weight.len() + bias.len();
        Ok((
            Tensor::from_vec(n.weight, &want[..], &self.device)?,
            Tensor::from_vec(bias, out, &self.device)?,
        ))
    }

    fn unit(&mut self, what: &str, inp: usize, out: usize, relu: bool) -> Result<DpUnit> {
        let (pw_weight, pw_bias) = self.next(what, (out, inp, 1), (1, 1, 0))?;
        let (dw_weight, dw_bias) = self.next(what, (out, out, 3), (out, 1, 1))?;
        Ok(DpUnit {
            pw_weight,
            pw_bias,
            dw_weight,
            dw_bias,
            relu,
        })
    }
}

impl YuNet {
    /// The bundled YuNet-n on `device`.
    pub fn bundled(device: &Device) -> Result<Self> {
        Self::from_onnx(BUNDLED_ONNX, "the bundled YuNet", device)
    }

    /// YuNet-n from an ONNX file's bytes (`what` names it in errors).
    pub fn from_onnx(bytes: &[u8], what: &str, device: &Device) -> Result<Self> {
        let model = ModelProto::decode_file(bytes, what)?;
        let graph = model
            .graph
            .ok_or_else(|| Error::Onnx(format!("{what}: the ONNX file has no graph")))?;
        let convs = graph.conv_nodes()?;
        if convs.len() != 59 {
            return Err(Error::Onnx(format!(
                "{what}: {} convolutions, YuNet-n has 59",
                convs.len()
            )));
        }
        let mut q = NodeQueue {
            nodes: convs.into_iter(),
            device: device.clone(),
            params: 0,
        };
        let (w, b) = q.next("stem", (16, 3, 3), (1, 2, 1))?;
        let stem = Conv2d::from_tensors(
            w,
            Some(b),
            Conv2dConfig {
                stride: 2,
                padding: 1,
                bias: true,
            },
        )?;
        let mut backbone = vec![q.unit("model0", 16, 16, true)?];
        for (i, (inp, mid)) in [(16, 64), (64, 64), (64, 64), (64, 64), (64, 64)]
            .into_iter()
            .enumerate()
        {
            let first_in = if i == 0 { 16 } else { inp };
            let first_out = if i == 0 { 16 } else { mid };
            backbone.push(q.unit(&format!("model{}", i + 1), first_in, first_out, true)?);
            backbone.push(q.unit(&format!("model{}", i + 1), first_out, mid, true)?);
        }
        let lat2 = q.unit("neck.lateral_convs.2", 64, 64, true)?;
        let lat1 = q.unit("neck.lateral_convs.1", 64, 64, true)?;
        let lat0 = q.unit("neck.lateral_convs.0", 64, 64, true)?;
        let shared = [
            q.unit("bbox_head.multi_level_share_convs.0", 64, 64, true)?,
            q.unit("bbox_head.multi_level_share_convs.1", 64, 64, true)?,
            q.unit("bbox_head.multi_level_share_convs.2", 64, 64, true)?,
        ];
        let mut branch = |name: &str, out: usize| -> Result<[DpUnit; 3]> {
            Ok([
                q.unit(&format!("bbox_head.multi_level_{name}.0"), 64, out, false)?,
                q.unit(&format!("bbox_head.multi_level_{name}.1"), 64, out, false)?,
                q.unit(&format!("bbox_head.multi_level_{name}.2"), 64, out, false)?,
            ])
        };
        let [c0, c1, c2] = branch("cls", 1)?;
        let [b0, b1, b2] = branch("bbox", 4)?;
        let [o0, o1, o2] = branch("obj", 1)?;
        let [k0, k1, k2] = branch("kps", 10)?;
        let [s0, s1, s2] = shared;
        Ok(Self {
            stem,
            backbone,
            lateral: [lat0, lat1, lat2],
            heads: [
                [s0, c0, b0, o0, k0],
                [s1, c1, b1, o1, k1],
                [s2, c2, b2, o2, k2],
            ],
            params: q.params,
            device: device.clone(),
        })
    }

    /// Convolution weights and biases (73,840 for YuNet-n's ONNX file, whose batch norms are
    /// folded into the convolutions).
    pub fn num_params(&self) -> usize {
        self.params
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs the network on `(N, 3, H, W)` BGR 0-255 with `H` and `W` multiples of 32; returns
    /// the three levels (strides 8, 16, 32).
    pub fn forward(&self, x: &Tensor) -> Result<[LevelOutput; 3]> {
        let (_, c, h, w) = x.dims4()?;
        if c != 3 || h % DIVISOR != 0 || w % DIVISOR != 0 || h == 0 || w == 0 {
            return Err(Error::Shape(format!(
                "YuNet takes (N, 3, H, W) with H and W positive multiples of {DIVISOR}, got {:?}",
                x.dims()
            )));
        }
        let pool = MaxPool2d {
            kernel: 2,
            stride: 2,
            padding: 0,
            ceil_mode: false,
        };
        let up = Upsample { scale: 2 };
        let b = &self.backbone;
        let mut y = self.stem.forward_relu(x)?;
        y = b[0].forward(&y)?;
        y = pool.forward(&y)?;
        y = b[2].forward(&b[1].forward(&y)?)?; // model1
        y = b[4].forward(&b[3].forward(&y)?)?; // model2
        y = pool.forward(&y)?;
        let c3 = b[6].forward(&b[5].forward(&y)?)?; // model3, stride 8
        let c4 = b[8].forward(&b[7].forward(&pool.forward(&c3)?)?)?; // model4, stride 16
        let c5 = b[10].forward(&b[9].forward(&pool.forward(&c4)?)?)?; // model5, stride 32
        let p5 = self.lateral[2].forward(&c5)?;
        let p4 = self.lateral[1].forward(&up.forward_add(&p5, &c4)?)?;
        let p3 = self.lateral[0].forward(&up.forward_add(&p4, &c3)?)?;
        let level = |i: usize, p: &Tensor| -> Result<LevelOutput> {
            let [shared, cls, bbox, obj, kps] = &self.heads[i];
            let s = shared.forward(p)?;
            Ok(LevelOutput {
                cls: cls.forward(&s)?,
                obj: obj.forward(&s)?,
                bbox: bbox.forward(&s)?,
                kps: kps.forward(&s)?,
            })
        };
        Ok([level(0, &p3)?, level(1, &p4)?, level(2, &p5)?])
    }

    /// Faces in one image given as BGR planes (`3 x height x width` values, 0-255), padded here
    /// to multiples of 32; coordinates in the image's pixels.
    pub fn detect_bgr_planes(
        &self,
        planes: &[f32],
        width: usize,
        height: usize,
        cfg: &YuNetConfig,
    ) -> Result<Vec<Detection>> {
        if width == 0 || height == 0 || planes.len() != 3 * width * height {
            return Err(Error::Shape(format!(
                "YuNet: {} values for a 3x{height}x{width} image",
                planes.len()
            )));
        }
        self.detect_padded(width, height, cfg, |c, y, row| {
            row.copy_from_slice(&planes[(c * height + y) * width..][..width]);
        })
    }

    /// Fills a zero-padded `(1, 3, padded(height), padded(width))` input row by row with
    /// `fill(channel, y, row)` (the `width` values of that row), runs the network, decodes
    /// and suppresses.
    fn detect_padded(
        &self,
        width: usize,
        height: usize,
        cfg: &YuNetConfig,
        fill: impl Fn(usize, usize, &mut [f32]),
    ) -> Result<Vec<Detection>> {
        let (pw, ph) = (padded(width), padded(height));
        let mut buf = vec![0f32; 3 * pw * ph];
        for c in 0..3 {
            for y in 0..height {
                fill(c, y, &mut buf[(c * ph + y) * pw..][..width]);
            }
        }
        let x = Tensor::from_vec(buf, (1, 3, ph, pw), &self.device)?;
        let levels = self.forward(&x)?;
        let candidates = decode(&levels, 0, cfg.score_threshold)?;
        Ok(nms(candidates, cfg))
    }

    /// Faces in an RGB image (`height x width x 3` bytes, as image decoders give).
    pub fn detect_rgb8(
        &self,
        rgb: &[u8],
        width: usize,
        height: usize,
        cfg: &YuNetConfig,
    ) -> Result<Vec<Detection>> {
        if width == 0 || height == 0 || rgb.len() != 3 * width * height {
            return Err(Error::Shape(format!(
                "YuNet: {} bytes for a {width}x{height} RGB image",
                rgb.len()
            )));
        }
        // BGR planes, as OpenCV feeds the network: channel c takes byte 2 - c of each pixel.
        self.detect_padded(width, height, cfg, |c, y, row| {
            let src = &rgb[3 * y * width..3 * (y + 1) * width];
            for (v, px) in row.iter_mut().zip(src.chunks_exact(3)) {
                *v = px[2 - c] as f32;
            }
        })
    }
}

/// `side` rounded up to a multiple of [`DIVISOR`] (OpenCV's `padW`, `padH`).
pub fn padded(side: usize) -> usize {
    side.div_ceil(DIVISOR) * DIVISOR
}

fn host(t: &Tensor, image: usize) -> Result<(Vec<f32>, usize, usize)> {
    let t = t.get(image)?.to_dtype(DType::F32)?;
    let (_, h, w) = t.dims3()?;
    Ok((t.flatten_all()?.to_vec1()?, h, w))
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Every grid cell of image `image` scoring at least `score_threshold`, as `FaceDetectorYN`'s
/// `postProcess` decodes it: score `sqrt(clamp(σ(cls)) · clamp(σ(obj)))`, centre
/// `(col + dx, row + dy) · s`, size `exp(log w, log h) · s`, points `(col + dx, row + dy) · s`;
/// in level order (stride 8 first), row-major within a level.
pub fn decode(
    levels: &[LevelOutput; 3],
    image: usize,
    score_threshold: f32,
) -> Result<Vec<Detection>> {
    let mut out = Vec::new();
    for (level, &s) in levels.iter().zip(&STRIDES) {
        let (cls, rows, cols) = host(&level.cls, image)?;
        let (obj, ..) = host(&level.obj, image)?;
        let (bbox, ..) = host(&level.bbox, image)?;
        let (kps, ..) = host(&level.kps, image)?;
        let plane = rows * cols;
        let s = s as f32;
        for r in 0..rows {
            for c in 0..cols {
                let i = r * cols + c;
                let score =
                    (sigmoid(cls[i]).clamp(0.0, 1.0) * sigmoid(obj[i]).clamp(0.0, 1.0)).sqrt();
                if score < score_threshold {
                    continue;
                }
                let (cf, rf) = (c as f32, r as f32);
                let cx = (cf + bbox[i]) * s;
                let cy = (rf + bbox[plane + i]) * s;
                let w = bbox[2 * plane + i].exp() * s;
                let h = bbox[3 * plane + i].exp() * s;
                let mut points5 = [[0f32; 2]; 5];
                for (n, p) in points5.iter_mut().enumerate() {
                    *p = [
                        (kps[2 * n * plane + i] + cf) * s,
                        (kps[(2 * n + 1) * plane + i] + rf) * s,
                    ];
                }
                out.push(Detection {
                    bbox: [cx - w / 2.0, cy - h / 2.0, w, h],
                    points5,
                    score,
                });
            }
        }
    }
    Ok(out)
}

/// Non-maximum suppression as OpenCV's `dnn::NMSBoxes` on `FaceDetectorYN`'s integer boxes:
/// candidates scoring above the threshold, stably sorted by score (best first), cut to `top_k`;
/// each kept unless its IoU with an already kept box exceeds `nms_threshold`.
pub fn nms(candidates: Vec<Detection>, cfg: &YuNetConfig) -> Vec<Detection> {
    let mut order: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].score > cfg.score_threshold)
        .collect();
    order.sort_by(|&a, &b| candidates[b].score.total_cmp(&candidates[a].score));
    order.truncate(cfg.top_k);
    let rects: Vec<[i64; 4]> = candidates
        .iter()
        .map(|d| d.bbox.map(|v| v as i64)) // C++'s int(): truncation toward zero
        .collect();
    let mut kept: Vec<usize> = Vec::new();
    for i in order {
        if kept
            .iter()
            .all(|&k| int_iou(&rects[i], &rects[k]) <= cfg.nms_threshold)
        {
            kept.push(i);
        }
    }
    kept.into_iter().map(|i| candidates[i]).collect()
}

/// IoU of two integer `[x, y, w, h]` rectangles, as OpenCV's `rectOverlap` (an empty
/// intersection has area 0; two empty rectangles overlap fully).
fn int_iou(a: &[i64; 4], b: &[i64; 4]) -> f32 {
    let (aa, ab) = (a[2] * a[3], b[2] * b[3]);
    if aa + ab <= 0 {
        return 1.0;
    }
    let x1 = a[0].max(b[0]);
    let y1 = a[1].max(b[1]);
    let w = (a[0] + a[2]).min(b[0] + b[2]) - x1;
    let h = (a[1] + a[3]).min(b[1] + b[3]) - y1;
    let inter = if w <= 0 || h <= 0 { 0 } else { w * h } as f64;
    // OpenCV: distance = 1 - inter / union in double, overlap = 1.f - float(distance).
    let distance = 1.0 - inter / ((aa + ab) as f64 - inter);
    1.0 - distance as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32, y: f32, w: f32, h: f32, score: f32) -> Detection {
        Detection {
            bbox: [x, y, w, h],
            points5: [[0.0; 2]; 5],
            score,
        }
    }

    #[test]
    fn the_bundled_file_loads_every_convolution_weight_of_the_onnx_graph() {
        // 73,840 = the sum of the ONNX file's Conv weights and biases (counted with the onnx
        // package); the authors' 75,856 also counts the batch-norm parameters the export
        // folded into the convolutions.
        let net = YuNet::bundled(&Device::Cpu).unwrap();
        assert_eq!(net.num_params(), 73_840);
    }

    #[test]
    fn the_bundled_bytes_are_the_published_file() {
        assert_eq!(crate::io::sha256_hex(BUNDLED_ONNX), BUNDLED_SHA256);
    }

    #[test]
    fn a_blank_image_has_no_face_and_odd_sizes_are_padded() {
        let net = YuNet::bundled(&Device::Cpu).unwrap();
        let faces = net
            .detect_rgb8(&vec![128u8; 3 * 45 * 33], 45, 33, &YuNetConfig::default())
            .unwrap();
        assert!(faces.is_empty(), "{faces:?}");
        assert_eq!((padded(1), padded(32), padded(33)), (32, 32, 64));
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes_and_disjoint_ones() {
        let cfg = YuNetConfig {
            score_threshold: 0.5,
            nms_threshold: 0.3,
            top_k: 10,
        };
        let kept = nms(
            vec![
                det(0.0, 0.0, 10.0, 10.0, 0.8),
                det(1.0, 1.0, 10.0, 10.0, 0.9), // IoU 81/119 with the first
                det(50.0, 50.0, 10.0, 10.0, 0.7), // disjoint
                det(60.0, 60.0, 10.0, 10.0, 0.4), // below the threshold
            ],
            &cfg,
        );
        let scores: Vec<f32> = kept.iter().map(|d| d.score).collect();
        assert_eq!(scores, vec![0.9, 0.7]);
        let top1 = nms(
            vec![det(0.0, 0.0, 5.0, 5.0, 0.6), det(20.0, 0.0, 5.0, 5.0, 0.7)],
            &YuNetConfig { top_k: 1, ..cfg },
        );
        assert_eq!(top1.len(), 1);
        assert_eq!(top1[0].score, 0.7);
    }

    #[test]
    fn integer_iou_truncates_like_cpp_and_treats_empty_rectangles_as_overlapping() {
        assert_eq!(int_iou(&[0, 0, 10, 10], &[0, 0, 10, 10]), 1.0);
        assert_eq!(int_iou(&[0, 0, 10, 10], &[10, 0, 10, 10]), 0.0);
        assert!((int_iou(&[0, 0, 10, 10], &[5, 0, 10, 10]) - 50.0 / 150.0).abs() < 1e-6);
        assert_eq!(int_iou(&[0, 0, 0, 0], &[3, 3, 0, 0]), 1.0);
        let d = det(-0.7, 2.9, 10.2, 3.99, 1.0);
        assert_eq!(d.bbox.map(|v| v as i64), [0, 2, 10, 3]);
    }

    #[test]
    fn unscaling_maps_boxes_and_points_back_to_the_original_photo() {
        let mut d = det(10.0, 20.0, 30.0, 40.0, 0.9);
        d.points5[4] = [5.0, 6.0];
        let u = d.unscaled(0.5, 0.5);
        assert_eq!(u.bbox, [20.0, 40.0, 60.0, 80.0]);
        assert_eq!(u.points5[4], [10.0, 12.0]);
        let v = d.unscaled(0.5, 0.25);
        assert_eq!(v.bbox, [20.0, 80.0, 60.0, 160.0]);
        assert_eq!(v.points5[4], [10.0, 24.0]);
        assert_eq!(u.score, 0.9);
    }
}
