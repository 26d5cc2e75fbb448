//! ONNX files through prost: the protobuf messages kp reads and writes, with the field numbers
//! of ONNX's `onnx.proto` (IR version 3 and later); the graph walk that takes weights out of a
//! file (YuNet's); and, in [`graph`] and [`export`], the writer that turns kp's networks into
//! ONNX models.
//!
//! Why not a full ONNX crate: kp needs the graph's nodes, their attributes, the weight tensors
//! (initializers) and the graph's typed inputs and outputs, nothing that runs a graph. prost
//! encodes and decodes exactly the fields declared here (a `oneof` of `onnx.proto` is declared
//! as its one optional field kp uses: the same bytes on the wire) and skips every other one, so
//! these few message types read any valid ONNX file and write files that `onnx.checker`,
//! onnxruntime and OpenCV read (checked by `cargo xtask onnx`). Decoding is bounded by the
//! input: a file is read into memory once (its size checked by the caller) and prost never
//! allocates more than the bytes it is given describe.

use prost::Message;

use crate::error::{Error, Result};

pub mod export;
pub mod graph;

pub use export::{export_keypoint_model, KeypointExport};
pub use graph::OnnxGraph;

/// `onnx.ModelProto`: a whole file.
#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    /// IR version of the file format.
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    /// Operator sets the graph uses.
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    /// Tool that wrote the file.
    #[prost(string, tag = "2")]
    pub producer_name: String,
    /// Its version.
    #[prost(string, tag = "3")]
    pub producer_version: String,
    /// Reverse-DNS namespace of the model.
    #[prost(string, tag = "4")]
    pub domain: String,
    /// Version of the model.
    #[prost(int64, tag = "5")]
    pub model_version: i64,
    /// What the model is, for people.
    #[prost(string, tag = "6")]
    pub doc_string: String,
    /// The graph.
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    /// Free-form key/value metadata.
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// `onnx.OperatorSetIdProto`.
#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    /// Operator domain (empty: the default ONNX domain).
    #[prost(string, tag = "1")]
    pub domain: String,
    /// Operator set version.
    #[prost(int64, tag = "2")]
    pub version: i64,
}

/// `onnx.StringStringEntryProto`.
#[derive(Clone, PartialEq, Message)]
pub struct StringStringEntryProto {
    /// Key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `onnx.GraphProto`: nodes in topological order and the weights they read.
#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    /// Nodes, topologically sorted.
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    /// Graph name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Constant tensors (weights).
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    /// What the graph computes, for people.
    #[prost(string, tag = "10")]
    pub doc_string: String,
    /// The graph's inputs, typed.
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    /// The graph's outputs, typed.
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
}

/// `onnx.ValueInfoProto`: a named, typed value (a graph input or output).
#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    /// Value name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its type.
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
    /// What it holds, for people.
    #[prost(string, tag = "3")]
    pub doc_string: String,
}

/// `onnx.TypeProto`, tensor types only (`tensor_type` of its `value` oneof).
#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    /// A dense tensor's element type and shape.
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TensorTypeProto>,
}

/// `onnx.TypeProto.Tensor`.
#[derive(Clone, PartialEq, Message)]
pub struct TensorTypeProto {
    /// Element type (`TensorProto.DataType`).
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    /// Shape (absent: any rank).
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

/// `onnx.TensorShapeProto`.
#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    /// One entry per axis.
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

/// `onnx.TensorShapeProto.Dimension`: a fixed size or a named, dynamic one (the `value` oneof;
/// set one of the two).
#[derive(Clone, PartialEq, Message)]
pub struct Dimension {
    /// A fixed size.
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    /// A symbolic size, such as `N` for the batch.
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
}

/// `onnx.NodeProto`: one operator call.
#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    /// Input tensor names.
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    /// Output tensor names.
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    /// Node name.
    #[prost(string, tag = "3")]
    pub name: String,
    /// Operator (`Conv`, `Relu`, ...).
    #[prost(string, tag = "4")]
    pub op_type: String,
    /// Attributes.
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    /// Operator domain (empty: the default ONNX domain).
    #[prost(string, tag = "7")]
    pub domain: String,
}

/// `onnx.AttributeProto` (the scalar and list kinds kp reads).
#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    /// Attribute name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// A float. `onnx.proto` is proto2: a scalar attribute's value must be present on the wire
    /// even when it is 0 (OpenCV refuses `axis` otherwise), hence `Option`.
    #[prost(float, optional, tag = "2")]
    pub f: Option<f32>,
    /// An integer.
    #[prost(int64, optional, tag = "3")]
    pub i: Option<i64>,
    /// A string.
    #[prost(bytes = "vec", optional, tag = "4")]
    pub s: Option<Vec<u8>>,
    /// Floats.
    #[prost(float, repeated, tag = "7")]
    pub floats: Vec<f32>,
    /// A tensor.
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    /// Integers.
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
    /// Which field holds the value (`AttributeType`).
    #[prost(int32, tag = "20")]
    pub r#type: i32,
}

/// `onnx.TensorProto` (dense tensors: dims, type, and the data inline).
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    /// Shape.
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    /// Element type (`TensorProto.DataType`: 1 = FLOAT).
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    /// Float data when not in `raw_data`.
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    /// INT64 data when not in `raw_data`.
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    /// Tensor name.
    #[prost(string, tag = "8")]
    pub name: String,
    /// Little-endian bytes of the elements.
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
}

/// `TensorProto.DataType.FLOAT`.
pub const FLOAT: i32 = 1;
/// `TensorProto.DataType.INT64`.
pub const INT64: i32 = 7;

impl ModelProto {
    /// Decodes an ONNX file's bytes; `what` names the file in errors.
    pub fn decode_file(bytes: &[u8], what: &str) -> Result<Self> {
        Self::decode(bytes).map_err(|e| Error::Onnx(format!("{what}: not an ONNX model ({e})")))
    }
}

impl NodeProto {
    /// The integer list attribute `name`, if present.
    pub fn ints(&self, name: &str) -> Option<&[i64]> {
        self.attribute
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.ints.as_slice())
    }

    /// The integer attribute `name`, if present.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.attribute
            .iter()
            .find(|a| a.name == name)
            .and_then(|a| a.i)
    }
}

impl TensorProto {
    /// The shape as `usize`s (an error for negative sizes).
    pub fn shape(&self) -> Result<Vec<usize>> {
        self.dims
            .iter()
            .map(|&d| {
                usize::try_from(d).map_err(|_| {
                    Error::Onnx(format!("ONNX tensor {}: negative size {d}", self.name))
                })
            })
            .collect()
    }

    /// The elements of a FLOAT tensor, from `raw_data` or `float_data`, checked against the
    /// shape.
    pub fn f32_data(&self) -> Result<Vec<f32>> {
        if self.data_type != FLOAT {
            return Err(Error::Onnx(format!(
                "ONNX tensor {}: element type {} is not FLOAT",
                self.name, self.data_type
            )));
        }
        let n: usize = self.shape()?.iter().product();
        let data: Vec<f32> = if self.raw_data.is_empty() {
            self.float_data.clone()
        } else {
            self.raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        if data.len() != n || (!self.raw_data.is_empty() && self.raw_data.len() != 4 * n) {
            return Err(Error::Onnx(format!(
                "ONNX tensor {}: {} values for shape {:?}",
                self.name,
                data.len(),
                self.dims
            )));
        }
        Ok(data)
    }
}

/// One `Conv` node of a graph with its weights: what a kp convolution layer is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvNode {
    /// Node name (for errors).
    pub name: String,
    /// Weight shape `(out, in / groups, kh, kw)`.
    pub weight_shape: [usize; 4],
    /// Weight values, row-major.
    pub weight: Vec<f32>,
    /// Bias values (`out`), if the node has a bias input.
    pub bias: Option<Vec<f32>>,
    /// `group` attribute (1 when absent).
    pub groups: usize,
    /// `strides` (both axes equal; checked).
    pub stride: usize,
    /// `pads` (all four equal; checked).
    pub padding: usize,
}

impl GraphProto {
    /// Every `Conv` node in graph order with its weights and attributes. Refuses dilations,
    /// unequal strides or pads, and weights that are not initializers.
    pub fn conv_nodes(&self) -> Result<Vec<ConvNode>> {
        let find = |name: &str| self.initializer.iter().find(|t| t.name == name);
        let mut out = Vec::new();
        for node in self.node.iter().filter(|n| n.op_type == "Conv") {
            let bad = |what: String| Error::Onnx(format!("ONNX Conv node {}: {what}", node.name));
            let w = node
                .input
                .get(1)
                .and_then(|n| find(n))
                .ok_or_else(|| bad("weight is not an initializer".into()))?;
            let shape = w.shape()?;
            let weight_shape: [usize; 4] = shape
                .as_slice()
                .try_into()
                .map_err(|_| bad(format!("weight shape {shape:?} is not 4-D")))?;
            let bias = match node.input.get(2).filter(|n| !n.is_empty()) {
                Some(n) => Some(
                    find(n)
                        .ok_or_else(|| bad("bias is not an initializer".into()))?
                        .f32_data()?,
                ),
                None => None,
            };
            let all_equal = |v: Option<&[i64]>, default: i64| -> Option<i64> {
                match v {
                    None | Some([]) => Some(default),
                    Some(v) => v.iter().all(|&x| x == v[0]).then_some(v[0]),
                }
            };
            let stride =
                all_equal(node.ints("strides"), 1).ok_or_else(|| bad("unequal strides".into()))?;
            let padding =
                all_equal(node.ints("pads"), 0).ok_or_else(|| bad("unequal pads".into()))?;
            if all_equal(node.ints("dilations"), 1) != Some(1) {
                return Err(bad("dilated convolutions are not supported".into()));
            }
            let groups = node.int("group").unwrap_or(1);
            let to_usize = |v: i64, what: &str| {
                usize::try_from(v)
                    .ok()
                    .filter(|&v| v > 0 || what == "pads")
                    .ok_or_else(|| bad(format!("{what} {v}")))
            };
            out.push(ConvNode {
                name: node.name.clone(),
                weight_shape,
                weight: w.f32_data()?,
                bias,
                groups: to_usize(groups, "group")?,
                stride: to_usize(stride, "strides")?,
                padding: to_usize(padding, "pads")?,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
        TensorProto {
            dims: dims.to_vec(),
            data_type: FLOAT,
            float_data: Vec::new(),
            name: name.into(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        }
    }

    fn ints(name: &str, v: &[i64]) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            ints: v.to_vec(),
            r#type: 7,
            ..Default::default()
        }
    }

    #[test]
    fn a_conv_node_round_trips_through_the_protobuf_encoding() {
        let graph = GraphProto {
            node: vec![NodeProto {
                input: vec!["x".into(), "w".into(), "b".into()],
                output: vec!["y".into()],
                name: "Conv_0".into(),
                op_type: "Conv".into(),
                attribute: vec![ints("strides", &[2, 2]), ints("pads", &[1, 1, 1, 1])],
                ..Default::default()
            }],
            name: "g".into(),
            initializer: vec![
                tensor("w", &[1, 1, 1, 2], &[1.5, -2.0]),
                tensor("b", &[1], &[0.25]),
            ],
            ..Default::default()
        };
        let model = ModelProto {
            ir_version: 7,
            graph: Some(graph),
            ..Default::default()
        };
        let bytes = model.encode_to_vec();
        let back = ModelProto::decode_file(&bytes, "mem").unwrap();
        let convs = back.graph.unwrap().conv_nodes().unwrap();
        assert_eq!(convs.len(), 1);
        assert_eq!(convs[0].weight_shape, [1, 1, 1, 2]);
        assert_eq!(convs[0].weight, vec![1.5, -2.0]);
        assert_eq!(convs[0].bias, Some(vec![0.25]));
        assert_eq!(
            (convs[0].stride, convs[0].padding, convs[0].groups),
            (2, 1, 1)
        );
    }

    #[test]
    fn unequal_pads_and_truncated_weights_are_refused_with_the_node_name() {
        let node = |pads: &[i64]| NodeProto {
            input: vec!["x".into(), "w".into()],
            name: "Conv_7".into(),
            op_type: "Conv".into(),
            attribute: vec![ints("pads", pads)],
            ..Default::default()
        };
        let g = GraphProto {
            node: vec![node(&[0, 1, 0, 1])],
            initializer: vec![tensor("w", &[1, 1, 1, 1], &[1.0])],
            ..Default::default()
        };
        let e = g.conv_nodes().unwrap_err().to_string();
        assert!(e.contains("Conv_7") && e.contains("unequal pads"), "{e}");

        let g = GraphProto {
            node: vec![node(&[0, 0, 0, 0])],
            initializer: vec![tensor("w", &[2, 1, 1, 1], &[1.0])],
            ..Default::default()
        };
        let e = g.conv_nodes().unwrap_err().to_string();
        assert!(e.contains("1 values for shape [2, 1, 1, 1]"), "{e}");
    }

    #[test]
    fn garbage_bytes_are_an_error_not_a_panic() {
        let e = ModelProto::decode_file(&[0xff; 64], "junk.onnx").unwrap_err();
        assert!(
            e.to_string().contains("junk.onnx: not an ONNX model"),
            "{e}"
        );
    }
}
