//! Layers: parameters in a `VarMap` under PyTorch's names, and the choice of kernel per device
//! (kp-ops' CPU kernels, candle's device ops, cuDNN with the `cudnn` feature).

pub mod batchnorm;
pub mod conv;
pub mod depthwise;
pub mod init;
pub mod linear;
pub mod maxpool;
pub mod sequential;
pub mod upsample;
