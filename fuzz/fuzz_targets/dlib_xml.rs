//! dlib XML: never a panic; the `--skip-bad` parser agrees with the strict one on every file
//! the strict one accepts (same images, nothing skipped), and never keeps more images.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("fuzz.xml");
    let strict = kp_data::dlib_xml::parse_dlib_xml(&text, path);
    let lenient = kp_data::dlib_xml::parse_dlib_xml_skipping_bad(&text, path);
    match (&strict, &lenient) {
        (Ok(a), Ok((b, skipped))) => {
            assert_eq!(a, b);
            assert!(skipped.is_empty());
        }
        (Ok(_), Err(e)) => panic!("strict accepted, lenient refused: {e}"),
        // The strict parser refused: the lenient one either refuses too or says what it left out.
        (Err(_), Ok((_, skipped))) => assert!(!skipped.is_empty()),
        (Err(_), Err(_)) => {}
    }
    if let Ok((xml, _)) = lenient {
        for img in &xml.images {
            for b in &img.boxes {
                assert!(b.bbox.width > 0.0 && b.bbox.height > 0.0);
                assert!(b.parts.iter().all(|p| p.point.is_finite()));
            }
        }
    }
});
