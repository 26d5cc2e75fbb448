//! 300-W `.pts` text: never a panic; parsed points are finite.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(points) = kp_data::pts::parse_pts(&text, Path::new("fuzz.pts")) {
        assert!(points.iter().all(|p| p.is_finite()), "{points:?}");
    }
});
