//! A weights file (`model.safetensors`, a checkpoint's) as every model load reads it
//! (`kp_models::load_varmap`: the safetensors header and its offsets, dtypes, shapes, then the
//! values): never a panic; an accepted file set every variable to finite values of its shape,
//! and a refused one changed none.
#![no_main]
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = kp_fuzz::scratch_file("model.safetensors", data);
    let varmap = VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let init = candle_nn::Init::Const(0.25);
    let w = vb.get_with_hints((2, 3), "conv.weight", init).expect("var");
    let b = vb.get_with_hints(4, "bn.bias", init).expect("var");
    let sum = |t: &Tensor| t.sum_all().and_then(|s| s.to_scalar::<f32>()).expect("sum");
    match kp_models::load_varmap(&varmap, &path) {
        Ok(_) => {
            assert_eq!(w.dims(), &[2, 3]);
            assert_eq!(b.dims(), &[4]);
            assert!(sum(&w.abs().expect("abs")).is_finite() && sum(&b.abs().expect("abs")).is_finite());
        }
        Err(_) => assert!(sum(&w) == 1.5 && sum(&b) == 1.0, "a refused file changed the model"),
    }
});
