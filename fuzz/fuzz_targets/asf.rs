//! IMM `.asf` text: never a panic; a parsed shape's points are finite in pixels too
//! (the 58-point check is `load_asf_face`'s, not the parser's).
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(shape) = kp_data::imm::parse_asf(&text, Path::new("fuzz.asf")) {
        for p in shape.to_pixels(640, 480) {
            assert!(p.is_finite(), "{p:?}");
        }
    }
});
