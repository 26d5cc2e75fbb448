//! A run folder's `config.json` as `kp train --resume`, `kp eval` and `Predictor::open` read it
//! (`TrainConfig::load`: the file, parsed, then every value checked): never a panic; an
//! accepted configuration is within its bounds and round-trips through JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = kp_fuzz::scratch_file("config.json", data);
    if let Ok(cfg) = kp_train::config::TrainConfig::load(&path) {
        assert!(cfg.validate().is_ok(), "load accepted what validate refuses");
        let json = serde_json::to_string(&cfg).expect("an accepted config serialises");
        let again: kp_train::config::TrainConfig =
            serde_json::from_str(&json).expect("its JSON reads back");
        assert!(cfg.conflicts(&again).is_empty(), "round trip changed {json}");
    }
});
