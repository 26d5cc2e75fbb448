//! Which variables of a `VarMap` are trainable parameters and which are buffers.
//!
//! Batch-norm running statistics live in the `VarMap` (so they are saved) but must not be
//! handed to an optimizer; [`trainable_vars`] leaves them out.

use candle_core::Var;
use candle_nn::VarMap;

/// Suffixes of PyTorch buffer names.
const BUFFER_SUFFIXES: [&str; 3] = ["running_mean", "running_var", "num_batches_tracked"];

/// True for batch-norm buffers (`*.running_mean`, `*.running_var`, `*.num_batches_tracked`).
pub fn is_buffer(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    BUFFER_SUFFIXES.contains(&last)
}

/// The trainable floating-point variables, sorted by name.
pub fn trainable_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().expect("VarMap lock poisoned");
    let mut vars: Vec<(String, Var)> = data
        .iter()
        .filter(|(name, var)| !is_buffer(name) && var.dtype().is_float())
        .map(|(name, var)| (name.clone(), var.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Number of trainable parameters (elements) in `varmap`.
pub fn count_trainable(varmap: &VarMap) -> usize {
    trainable_vars(varmap)
        .iter()
        .map(|(_, v)| v.elem_count())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::batchnorm::{BatchNorm2d, BatchNormConfig};
    use candle_core::{DType, Device};
    use candle_nn::VarBuilder;

    #[test]
    fn buffers_are_not_trainable() {
        assert!(is_buffer("layer1.0.bn1.running_var"));
        assert!(is_buffer("bn1.num_batches_tracked"));
        assert!(!is_buffer("bn1.weight"));
        assert!(!is_buffer("running_mean_head.weight"));
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        BatchNorm2d::new(vb.pp("bn"), 4, BatchNormConfig::default()).unwrap();
        let names: Vec<String> = trainable_vars(&vm).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["bn.bias", "bn.weight"]);
        assert_eq!(count_trainable(&vm), 8);
    }
}
