//! Architectures built from [`crate::nn`]'s layers, and the registry that builds them by name.

pub mod compact;
pub mod convmlp;
pub mod face;
pub mod heatmap;
pub mod nose;
pub mod registry;
pub mod resnet;
pub mod yunet;
