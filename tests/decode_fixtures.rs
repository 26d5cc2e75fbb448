//! Writes the YuNet fixture images as kp decodes them (RGB PNGs), so that OpenCV's reference
//! detections (`xtask/bench/yunet_reference.py --decoded DIR`) are made on exactly the pixels
//! kp's test sees: JPEG decoders differ by a level or two per pixel (libjpeg-turbo in OpenCV,
//! zune-jpeg in kp), enough to move a 26-pixel face's box by half a pixel.
//!
//! `cargo run -p kp-tests --example decode_fixtures -- tests/data/yunet_opencv.json OUT_DIR`

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, reference, out] = &args[..] else {
        return Err("usage: decode_fixtures REFERENCE.json OUT_DIR".into());
    };
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(reference)?)?;
    std::fs::create_dir_all(out)?;
    let data = kp_tests::data_dir();
    for img in doc["images"].as_array().ok_or("no images")? {
        let rel = img["path"].as_str().ok_or("image without path")?;
        let rgb = kp_data::loading::load_rgb(&data.join(rel))?;
        let name = format!("{}.png", rel.replace('/', "_"));
        rgb.save(Path::new(out).join(&name))?;
        println!("{name}");
    }
    Ok(())
}
