//! [`OnnxGraph`]: builds an ONNX graph one node at a time, the way kp's layers run.
//!
//! Each kp layer writes its own nodes (`to_onnx` beside its `forward`, in the layer's file), so
//! a layer's ONNX form lives next to the computation it must equal. A layer takes the name of
//! its input value and returns the name of its output; weights become initializers named after
//! the node that reads them (`conv3.weight`). Names are unique by construction: every node gets
//! a fresh number.
//!
//! The operators are those of the default domain at [`OPSET`] 13 (the first with `Softmax` over
//! one axis and `Split`/`Pad` taking tensors as inputs), which onnxruntime, OpenCV's `dnn`
//! module and onnxruntime-web all run.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::onnx::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TensorTypeProto, TypeProto,
    ValueInfoProto, FLOAT, INT64,
};

/// The operator set the graphs use.
pub const OPSET: i64 = 13;
/// The IR version of opset 13 (ONNX 1.8).
pub const IR_VERSION: i64 = 7;

/// An ONNX attribute (`AttributeProto`) of one of the kinds kp writes.
pub enum Attr {
    /// `INT`.
    Int(&'static str, i64),
    /// `INTS`.
    Ints(&'static str, Vec<i64>),
    /// `FLOAT`.
    Float(&'static str, f32),
    /// `STRING`.
    Str(&'static str, &'static str),
}

impl Attr {
    fn proto(self) -> AttributeProto {
        // AttributeProto.AttributeType: FLOAT 1, INT 2, STRING 3, INTS 7.
        match self {
            Attr::Int(name, i) => AttributeProto {
                name: name.into(),
                i: Some(i),
                r#type: 2,
                ..Default::default()
            },
            Attr::Ints(name, ints) => AttributeProto {
                name: name.into(),
                ints,
                r#type: 7,
                ..Default::default()
            },
            Attr::Float(name, f) => AttributeProto {
                name: name.into(),
                f: Some(f),
                r#type: 1,
                ..Default::default()
            },
            Attr::Str(name, s) => AttributeProto {
                name: name.into(),
                s: Some(s.as_bytes().to_vec()),
                r#type: 3,
                ..Default::default()
            },
        }
    }
}

/// A graph under construction: nodes in execution order and the initializers they read.
#[derive(Debug, Default)]
pub struct OnnxGraph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    next: usize,
}

/// A float tensor's type with `dims`: a number is a fixed size, a name (`"N"`) a dynamic one.
fn float_type(dims: &[Dim]) -> TypeProto {
    TypeProto {
        tensor_type: Some(TensorTypeProto {
            elem_type: FLOAT,
            shape: Some(TensorShapeProto {
                dim: dims
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(n) => Dimension {
                            dim_value: Some(*n as i64),
                            dim_param: None,
                        },
                        Dim::Named(s) => Dimension {
                            dim_value: None,
                            dim_param: Some((*s).into()),
                        },
                    })
                    .collect(),
            }),
        }),
    }
}

/// One axis of a graph input or output.
#[derive(Debug, Clone, Copy)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A size chosen at run time, by name (the batch: `N`).
    Named(&'static str),
}

impl OnnxGraph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a float input of the graph and returns its name.
    pub fn input(&mut self, name: &str, dims: &[Dim], doc: &str) -> String {
        self.inputs.push(ValueInfoProto {
            name: name.into(),
            r#type: Some(float_type(dims)),
            doc_string: doc.into(),
        });
        name.into()
    }

    /// Makes `value` a float output of the graph called `name` (an `Identity` node renames it).
    pub fn output(&mut self, value: &str, name: &str, dims: &[Dim], doc: &str) {
        self.nodes.push(NodeProto {
            input: vec![value.into()],
            output: vec![name.into()],
            name: format!("{name}_out"),
            op_type: "Identity".into(),
            ..Default::default()
        });
        self.outputs.push(ValueInfoProto {
            name: name.into(),
            r#type: Some(float_type(dims)),
            doc_string: doc.into(),
        });
    }

    fn fresh(&mut self, op: &str) -> String {
        self.next += 1;
        format!("{}{}", op.to_ascii_lowercase(), self.next)
    }

    /// A float initializer with `dims` and `values` (row-major); returns its name.
    pub fn floats(&mut self, name: &str, dims: &[usize], values: &[f32]) -> Result<String> {
        let n: usize = dims.iter().product();
        if n != values.len() {
            return Err(Error::Onnx(format!(
                "ONNX initializer {name}: {} values for shape {dims:?}",
                values.len()
            )));
        }
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: FLOAT,
            name: name.into(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        Ok(name.into())
    }

    /// A 1-D INT64 initializer; returns its name.
    pub fn ints(&mut self, name: &str, values: &[i64]) -> String {
        self.initializers.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: INT64,
            name: name.into(),
            int64_data: values.to_vec(),
            ..Default::default()
        });
        name.into()
    }

    /// A candle tensor (any float dtype, any device) as a float initializer.
    pub fn tensor(&mut self, name: &str, t: &Tensor) -> Result<String> {
        let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        self.floats(name, t.dims(), &values)
    }

    /// Appends an `op` node reading `inputs` (plus the initializers `weights` makes under the
    /// node's name) with `attrs`; returns its one output.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<Attr>) -> String {
        self.node_n(op, inputs, 1, attrs).remove(0)
    }

    /// [`Self::node`] with `outputs` outputs.
    pub fn node_n(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: usize,
        attrs: Vec<Attr>,
    ) -> Vec<String> {
        let name = self.fresh(op);
        let output: Vec<String> = if outputs == 1 {
            vec![name.clone()]
        } else {
            (0..outputs).map(|i| format!("{name}_{i}")).collect()
        };
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: output.clone(),
            name,
            op_type: op.into(),
            attribute: attrs.into_iter().map(Attr::proto).collect(),
            ..Default::default()
        });
        output
    }

    /// A name for the weights of the next node of type `op` (`conv12`), so a layer can add its
    /// initializers before the node that reads them and they share its number.
    pub fn next_name(&self, op: &str) -> String {
        format!("{}{}", op.to_ascii_lowercase(), self.next + 1)
    }

    /// `Conv` with square `kernel`, `stride`, `padding` and `groups`, weights `(out, in/groups,
    /// k, k)` and an optional bias.
    pub fn conv(
        &mut self,
        x: &str,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: usize,
        padding: usize,
        groups: usize,
    ) -> Result<String> {
        let base = self.next_name("Conv");
        let (_, _, kh, kw) = weight.dims4()?;
        let w = self.tensor(&format!("{base}.weight"), weight)?;
        let mut inputs = vec![x.to_string(), w];
        if let Some(b) = bias {
            inputs.push(self.tensor(&format!("{base}.bias"), b)?);
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let (s, p) = (stride as i64, padding as i64);
        Ok(self.node(
            "Conv",
            &refs,
            vec![
                Attr::Ints("kernel_shape", vec![kh as i64, kw as i64]),
                Attr::Ints("strides", vec![s, s]),
                Attr::Ints("pads", vec![p, p, p, p]),
                Attr::Ints("dilations", vec![1, 1]),
                Attr::Int("group", groups as i64),
            ],
        ))
    }

    /// `Relu`.
    pub fn relu(&mut self, x: &str) -> String {
        self.node("Relu", &[x], Vec::new())
    }

    /// `Add` (broadcasting).
    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.node("Add", &[a, b], Vec::new())
    }

    /// `Mul` (broadcasting).
    pub fn mul(&mut self, a: &str, b: &str) -> String {
        self.node("Mul", &[a, b], Vec::new())
    }

    /// `Reshape` to `shape` (`-1`: inferred; `0`: kept).
    pub fn reshape(&mut self, x: &str, shape: &[i64]) -> String {
        let base = self.next_name("Reshape");
        let s = self.ints(&format!("{base}.shape"), shape);
        self.node("Reshape", &[x, &s], Vec::new())
    }

    /// The finished model: this graph, opset [`OPSET`], `metadata` as `metadata_props`.
    pub fn into_model(self, name: &str, doc: &str, metadata: &[(String, String)]) -> ModelProto {
        ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "kp".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            domain: "kp".into(),
            model_version: 1,
            doc_string: doc.into(),
            graph: Some(GraphProto {
                node: self.nodes,
                name: name.into(),
                initializer: self.initializers,
                doc_string: doc.into(),
                input: self.inputs,
                output: self.outputs,
            }),
            metadata_props: metadata
                .iter()
                .map(|(k, v)| StringStringEntryProto {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use prost::Message;

    #[test]
    fn a_graph_names_each_node_and_its_weights_by_one_number_and_round_trips() {
        let mut g = OnnxGraph::new();
        let x = g.input(
            "image",
            &[Dim::Named("N"), Dim::Fixed(1), Dim::Fixed(4), Dim::Fixed(4)],
            "",
        );
        let w = Tensor::ones((2, 1, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let y = g.conv(&x, &w, None, 1, 1, 1).unwrap();
        let y = g.relu(&y);
        g.output(
            &y,
            "out",
            &[Dim::Named("N"), Dim::Fixed(2), Dim::Fixed(4), Dim::Fixed(4)],
            "",
        );
        let model = g.into_model("t", "doc", &[("k".into(), "v".into())]);
        let back = ModelProto::decode_file(&model.encode_to_vec(), "mem").unwrap();
        let graph = back.graph.unwrap();
        assert_eq!(graph.node[0].name, "conv1");
        assert_eq!(graph.node[0].input, ["image", "conv1.weight"]);
        assert_eq!(graph.initializer[0].name, "conv1.weight");
        assert_eq!(graph.node[1].input, ["conv1"]);
        assert_eq!(graph.node[2].op_type, "Identity");
        assert_eq!(graph.output[0].name, "out");
        let dims = &graph.input[0]
            .r#type
            .as_ref()
            .unwrap()
            .tensor_type
            .as_ref()
            .unwrap();
        let dims = &dims.shape.as_ref().unwrap().dim;
        assert_eq!(dims[0].dim_param.as_deref(), Some("N"));
        assert_eq!(dims[1].dim_value, Some(1));
        assert_eq!(back.metadata_props[0].value, "v");
        assert_eq!(back.opset_import[0].version, OPSET);
        let convs = graph.conv_nodes().unwrap();
        assert_eq!((convs[0].padding, convs[0].groups), (1, 1));
    }

    #[test]
    fn an_initializer_whose_values_do_not_fill_its_shape_is_refused() {
        let e = OnnxGraph::new().floats("w", &[2, 2], &[1.0]).unwrap_err();
        assert!(e.to_string().contains("1 values for shape [2, 2]"), "{e}");
    }
}
