//! A run folder's `state.json` as `--resume` reads it (`RunDir::read_state`, then
//! `RunState::validate` against the run's epochs): never a panic; an accepted state points at
//! a folder inside the run and counts within its epochs.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A run folder is one with a config.json; its contents do not matter here.
    kp_fuzz::scratch_file("config.json", b"{}");
    let path = kp_fuzz::scratch_file("state.json", data);
    let run = kp_train::run::RunDir::open(path.parent().expect("a folder")).expect("run folder");
    if let Ok(Some(state)) = run.read_state() {
        if state.validate(10).is_ok() {
            assert!(state.epochs_done <= 10);
            let c = std::path::Path::new(&state.checkpoint);
            assert!(c.is_relative() && !state.checkpoint.contains(".."), "{c:?}");
            assert!(run.path().join(c).starts_with(run.path()));
        }
    }
});
