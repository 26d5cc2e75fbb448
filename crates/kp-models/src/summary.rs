//! Module trees printed like PyTorch's `repr(model)`, with parameter counts.
//!
//! Every layer and network implements [`Describe`], which returns a [`ModuleNode`] tree.
//! [`ModuleNode::torch_repr`] renders it exactly as PyTorch prints a module (two-space indent);
//! [`summary`] adds the number of trainable parameters per layer and in total.

use std::fmt::Write as _;

/// One node of a module tree: a layer (leaf) or a container of named children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleNode {
    /// The PyTorch class name, e.g. `Conv2d` or `Sequential`.
    pub type_name: String,
    /// What PyTorch prints inside the parentheses of a leaf (`extra_repr`).
    pub extra: String,
    /// Trainable parameters held directly by this node (not its children).
    pub params: usize,
    /// Non-trainable buffer elements held directly by this node (running statistics).
    pub buffers: usize,
    /// Named children in registration order.
    pub children: Vec<(String, ModuleNode)>,
}

impl ModuleNode {
    /// A leaf layer.
    pub fn leaf(type_name: impl Into<String>, extra: impl Into<String>, params: usize) -> Self {
        Self {
            type_name: type_name.into(),
            extra: extra.into(),
            params,
            buffers: 0,
            children: Vec::new(),
        }
    }

    /// A container with named children.
    pub fn container(type_name: impl Into<String>, children: Vec<(String, ModuleNode)>) -> Self {
        Self {
            type_name: type_name.into(),
            extra: String::new(),
            params: 0,
            buffers: 0,
            children,
        }
    }

    /// A `Sequential` whose children are named `0`, `1`, ...
    pub fn sequential(children: Vec<ModuleNode>) -> Self {
        Self::container(
            "Sequential",
            children
                .into_iter()
                .enumerate()
                .map(|(i, c)| (i.to_string(), c))
                .collect(),
        )
    }

    /// Sets the buffer count (builder style).
    pub fn with_buffers(mut self, buffers: usize) -> Self {
        self.buffers = buffers;
        self
    }

    /// Trainable parameters of this node and all its descendants.
    pub fn total_params(&self) -> usize {
        self.params
            + self
                .children
                .iter()
                .map(|(_, c)| c.total_params())
                .sum::<usize>()
    }

    /// Buffer elements of this node and all its descendants.
    pub fn total_buffers(&self) -> usize {
        self.buffers
            + self
                .children
                .iter()
                .map(|(_, c)| c.total_buffers())
                .sum::<usize>()
    }

    /// The tree as PyTorch prints it.
    pub fn torch_repr(&self) -> String {
        let mut out = String::new();
        self.render(&mut out, 0, false);
        out
    }

    fn head(&self) -> String {
        format!("{}({}", self.type_name, self.extra)
    }

    fn render(&self, out: &mut String, indent: usize, counts: bool) {
        let count = |n: usize| {
            if counts && n > 0 {
                format!("  # {} params", group_thousands(n))
            } else {
                String::new()
            }
        };
        if self.children.is_empty() {
            let _ = write!(out, "{})", self.head());
            out.push_str(&count(self.params));
            return;
        }
        let _ = write!(out, "{}", self.head());
        out.push_str(&count(self.total_params()));
        out.push('\n');
        for (name, child) in &self.children {
            let pad = " ".repeat(indent + 2);
            let _ = write!(out, "{pad}({name}): ");
            child.render(out, indent + 2, counts);
            out.push('\n');
        }
        out.push_str(&" ".repeat(indent));
        out.push(')');
    }

    /// The tree with parameter counts per layer, then totals.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        self.render(&mut out, 0, true);
        let total = self.total_params();
        let _ = write!(
            out,
            "\nTotal params: {}\nTrainable params: {}\nBuffers (running statistics): {}\n",
            group_thousands(total),
            group_thousands(total),
            group_thousands(self.total_buffers()),
        );
        out
    }
}

impl std::fmt::Display for ModuleNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.torch_repr())
    }
}

/// Something that can describe its module tree.
pub trait Describe {
    /// The module tree with parameter counts.
    fn describe(&self) -> ModuleNode;
}

/// The tree of `model` with per-layer parameter counts and totals.
pub fn summary(model: &dyn Describe) -> String {
    model.describe().summary()
}

/// `1234567` → `1,234,567`.
pub fn group_thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A float as Python's `repr` prints it (`1e-05`, `0.1`, `1.0`).
pub fn py_float(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let a = v.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        let s = format!("{v:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let s = format!("{v}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

/// A Python bool literal.
pub fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_number_formats() {
        assert_eq!(py_float(1e-5), "1e-05");
        assert_eq!(py_float(0.1), "0.1");
        assert_eq!(py_float(1.0), "1.0");
        assert_eq!(py_float(2.5e-7), "2.5e-07");
        assert_eq!(py_float(1e-3), "0.001");
        assert_eq!(group_thousands(670946), "670,946");
        assert_eq!(group_thousands(100), "100");
        assert_eq!(group_thousands(1000), "1,000");
    }

    /// The seed's printed tree for `name`, trimmed lines.
    fn seed_tree(name: &str) -> Vec<String> {
        let text = include_str!("../tests/data/seed_reprs.txt");
        let mut lines = Vec::new();
        let mut inside = false;
        for line in text.lines() {
            if let Some(header) = line.strip_prefix("# ") {
                inside = header == name;
                continue;
            }
            if inside {
                lines.push(line.to_string());
            }
        }
        assert!(!lines.is_empty(), "{name} not in the seed file");
        lines
    }

    fn trimmed(tree: &ModuleNode) -> Vec<String> {
        tree.torch_repr()
            .lines()
            .map(|l| l.trim().to_string())
            .collect()
    }

    #[test]
    fn seed_networks_print_exactly_like_the_seed() {
        use crate::{
            FaceKeypointNet, FaceKeypointNetConfig, NoseTipNet, NoseTipNetConfig, ResNet18,
            ResNet18Config,
        };
        use candle_core::{DType, Device};
        use candle_nn::{VarBuilder, VarMap};
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let nose = NoseTipNet::new(vb.pp("n"), NoseTipNetConfig::default()).unwrap();
        let face = FaceKeypointNet::new(vb.pp("f"), FaceKeypointNetConfig::default()).unwrap();
        let resnet = ResNet18::new(vb.pp("r"), ResNet18Config::default()).unwrap();
        for (name, tree) in [
            ("NoseTipNet", nose.describe()),
            ("FaceKeypointNet", face.describe()),
            ("ResNet", resnet.describe()),
        ] {
            assert_eq!(trimmed(&tree), seed_tree(name), "{name}");
        }
        let s = summary(&nose);
        assert!(s.contains(
            "(0): Linear(in_features=1280, out_features=512, bias=True)  # 655,872 params"
        ));
        assert!(s.contains("Total params: 670,946"));
        let s = summary(&face);
        assert!(s.contains(
            "(0): Linear(in_features=4224, out_features=512, bias=True)  # 2,163,200 params"
        ));
        assert!(s.contains("Total params: 2,266,596"));
        let s = summary(&resnet);
        assert!(s.contains("Total params: 11,240,008"));
        // 20 batch norms: 2 * channels + 1 buffer elements each.
        assert!(s.contains("Buffers (running statistics): 9,620"), "{s}");
    }

    #[test]
    fn renders_nested_tree() {
        let tree = ModuleNode::container(
            "Net",
            vec![(
                "conv".into(),
                ModuleNode::sequential(vec![
                    ModuleNode::leaf("Conv2d", "1, 2, kernel_size=(1, 1), stride=(1, 1)", 4),
                    ModuleNode::leaf("ReLU", "", 0),
                ]),
            )],
        );
        let want = "Net(\n  (conv): Sequential(\n    (0): Conv2d(1, 2, kernel_size=(1, 1), \
                    stride=(1, 1))\n    (1): ReLU()\n  )\n)";
        assert_eq!(tree.torch_repr(), want);
        assert_eq!(tree.total_params(), 4);
        let s = tree.summary();
        assert!(s.contains("(0): Conv2d(1, 2, kernel_size=(1, 1), stride=(1, 1))  # 4 params"));
        assert!(s.contains("Total params: 4"));
    }
}
