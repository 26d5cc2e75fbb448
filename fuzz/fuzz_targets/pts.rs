//! 300-W `.pts` text: never a panic; parsed points are finite and within ±65536 px.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(points) = kp_data::pts::parse_pts(&text, Path::new("fuzz.pts")) {
        let max = kp_data::pts::MAX_COORD + 1.0;
        assert!(
            points
                .iter()
                .all(|p| p.is_finite() && p.x.abs() <= max && p.y.abs() <= max),
            "{points:?}"
        );
    }
});
