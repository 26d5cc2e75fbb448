//! kp-augment pipeline configs (what `--augment FILE` reads), as TOML and as JSON: never a
//! panic; an accepted config builds a pipeline that runs on a small image.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for parsed in [
        kp_augment::PipelineConfig::from_toml_str(&text),
        kp_augment::PipelineConfig::from_json_str(&text),
    ] {
        if let Ok(cfg) = parsed {
            // Keep the work per input small: outputs larger than 256 px are not run.
            if cfg.width <= 256 && cfg.height <= 256 {
                if let Ok(pipeline) = kp_augment::Pipeline::new(cfg) {
                    let img = kp_data::GrayF32::new(32, 24);
                    let pts = [kp_data::Point::new(10.0, 12.0)];
                    let _ = pipeline.apply(&img, &pts, None, 7);
                }
            }
        }
    }
});
