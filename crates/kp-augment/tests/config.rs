//! Presets, TOML/JSON round trips and typed errors for bad configs.

use kp_augment::{Error, FlipConfig, Pipeline, PipelineConfig, RotateConfig, StepConfig, PRESETS};

#[test]
fn every_preset_builds() {
    for name in PRESETS {
        let cfg = PipelineConfig::preset(name).unwrap();
        let p = Pipeline::new(cfg.clone()).unwrap();
        assert_eq!(p.config(), &cfg);
    }
    let size = |n| Pipeline::preset(n).unwrap().output_size();
    assert_eq!(size("none"), (160, 120));
    assert_eq!(size("seed-shift"), (160, 120));
    assert!(PipelineConfig::preset("none").unwrap().steps.is_empty());
    let kinds = |n| -> Vec<&'static str> {
        PipelineConfig::preset(n)
            .unwrap()
            .steps
            .iter()
            .map(StepConfig::kind)
            .collect()
    };
    assert_eq!(kinds("seed-shift"), ["translate"]);
    assert_eq!(kinds("shift-rotate"), ["translate", "rotate"]);
    assert_eq!(
        kinds("shift-rotate-jitter"),
        ["translate", "rotate", "brightness", "contrast", "gamma"]
    );
    // The study's tuned presets are kp-train's recipe files, not names here.
    assert!(matches!(
        PipelineConfig::preset("ibug"),
        Err(Error::UnknownPreset(_))
    ));
}

#[test]
fn unknown_preset_is_typed_error() {
    assert!(matches!(
        PipelineConfig::preset("fancy"),
        Err(Error::UnknownPreset(n)) if n == "fancy"
    ));
}

#[test]
fn toml_and_json_round_trip_every_preset() {
    for name in PRESETS {
        let cfg = PipelineConfig::preset(name).unwrap();
        let toml = cfg.to_toml_string().unwrap();
        assert_eq!(
            PipelineConfig::from_toml_str(&toml).unwrap(),
            cfg,
            "{name}\n{toml}"
        );
        let json = cfg.to_json_string().unwrap();
        assert_eq!(
            PipelineConfig::from_json_str(&json).unwrap(),
            cfg,
            "{name}\n{json}"
        );
    }
}

#[test]
fn from_file_picks_format_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = PipelineConfig::preset("shift-rotate-jitter")
        .unwrap()
        .with_step(StepConfig::Hflip(FlipConfig {
            p: 0.5,
            scheme: Some("ibug68".into()),
            permutation: None,
        }));
    let t = dir.path().join("aug.toml");
    std::fs::write(&t, cfg.to_toml_string().unwrap()).unwrap();
    assert_eq!(PipelineConfig::from_file(&t).unwrap(), cfg);
    let j = dir.path().join("aug.JSON");
    std::fs::write(&j, cfg.to_json_string().unwrap()).unwrap();
    assert_eq!(PipelineConfig::from_file(&j).unwrap(), cfg);
    let y = dir.path().join("aug.yaml");
    std::fs::write(&y, "width: 3").unwrap();
    assert!(matches!(
        PipelineConfig::from_file(&y),
        Err(Error::UnsupportedFormat(_))
    ));
    assert!(matches!(
        PipelineConfig::from_file(dir.path().join("missing.toml")),
        Err(Error::Io { .. })
    ));
    // A toml file holding JSON fails to parse, naming the file.
    let wrong = dir.path().join("wrong.toml");
    std::fs::write(&wrong, cfg.to_json_string().unwrap()).unwrap();
    match PipelineConfig::from_file(&wrong) {
        Err(Error::Parse(msg)) => assert!(msg.contains("wrong.toml"), "{msg}"),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn hand_written_toml_with_defaults() {
    let cfg = PipelineConfig::from_toml_str(
        r#"
        width = 96
        height = 96

        [[steps]]
        kind = "rotate"
        degrees = [-10.0, 10.0]

        [[steps]]
        kind = "hflip"
        p = 0.5
        scheme = "imm58"
        "#,
    )
    .unwrap();
    assert_eq!(cfg.fill, 0.0);
    assert!(cfg.antialias);
    assert_eq!(
        cfg.steps[0],
        StepConfig::Rotate(RotateConfig {
            degrees: [-10.0, 10.0].into(),
            ..Default::default()
        })
    );
    assert_eq!(
        cfg.steps[1],
        StepConfig::Hflip(FlipConfig {
            p: 0.5,
            scheme: Some("imm58".into()),
            permutation: None
        })
    );
    Pipeline::new(cfg).unwrap();
}

fn invalid(toml: &str) -> Error {
    match PipelineConfig::from_toml_str(toml) {
        Ok(c) => match Pipeline::new(c) {
            Ok(_) => panic!("accepted bad config:\n{toml}"),
            Err(e) => e,
        },
        Err(e) => e,
    }
}

#[test]
fn bad_configs_are_typed_errors() {
    let head = "width = 10\nheight = 10\n";
    let step = |body: &str| format!("{head}[[steps]]\n{body}");

    assert!(matches!(
        invalid("width = 0\nheight = 10"),
        Error::InvalidConfig(_)
    ));
    assert!(matches!(
        invalid("width = 100000\nheight = 10"),
        Error::InvalidConfig(_)
    ));
    assert!(matches!(
        invalid(&step("kind = \"rotate\"\np = 1.5\ndegrees = [0.0, 1.0]")),
        Error::InvalidConfig(m) if m.contains("p = 1.5")
    ));
    assert!(matches!(
        invalid(&step("kind = \"rotate\"\ndegrees = [5.0, -5.0]")),
        Error::InvalidConfig(m) if m.contains("degrees")
    ));
    assert!(matches!(
        invalid(&step("kind = \"scale\"\nfactor = [0.0, 1.0]")),
        Error::InvalidConfig(_)
    ));
    assert!(matches!(
        invalid(&step("kind = \"contrast\"\nfactor = [-1.0, 1.0]")),
        Error::InvalidConfig(_)
    ));
    assert!(matches!(
        invalid(&step("kind = \"crop_box\"\nmargin = [-1.0, 1.0]")),
        Error::InvalidConfig(_)
    ));
    assert!(matches!(
        invalid(&step(
            "kind = \"hflip\"\nscheme = \"ibug68\"\npermutation = [0]"
        )),
        Error::InvalidConfig(_)
    ));
    assert!(matches!(
        invalid(&step("kind = \"hflip\"\nscheme = \"muct76\"")),
        Error::UnknownScheme(s) if s == "muct76"
    ));
    assert!(matches!(
        invalid(&step("kind = \"hflip\"\npermutation = [0, 0, 1]")),
        Error::BadPermutation(_)
    ));
    assert!(matches!(
        invalid(&step("kind = \"hflip\"\npermutation = []")),
        Error::BadPermutation(_)
    ));
    assert!(matches!(
        invalid(&step("kind = \"occlude\"\nsize = [0.1, 1.5]\nvalue = [0.0, 0.0]")),
        Error::InvalidConfig(m) if m.contains("occlude") && m.contains("at most 1")
    ));
    assert!(matches!(
        invalid(&step("kind = \"occlude\"\nsize = [0.0, 0.5]\nvalue = [0.0, 0.0]")),
        Error::InvalidConfig(m) if m.contains("size")
    ));
    assert!(matches!(
        invalid(&step("kind = \"blur\"\nsigma = [1.0, 100.0]")),
        Error::InvalidConfig(m) if m.contains("blur") && m.contains("sigma")
    ));
    assert!(matches!(
        invalid(&step("kind = \"blur\"\nsigma = [0.0, 1.0]")),
        Error::InvalidConfig(m) if m.contains("sigma")
    ));
    // Unknown kinds and fields, missing fields and wrong types fail to parse.
    assert!(matches!(
        invalid(&step("kind = \"shear\"")),
        Error::Parse(_)
    ));
    assert!(matches!(
        invalid(&step("kind = \"rotate\"\ndegrees = [0.0, 1.0]\nangle = 3")),
        Error::Parse(_)
    ));
    assert!(matches!(
        invalid(&step("kind = \"rotate\"")),
        Error::Parse(_)
    ));
    assert!(matches!(
        invalid(&format!("{head}colour = true")),
        Error::Parse(_)
    ));
    assert!(matches!(
        invalid("width = \"big\"\nheight = 10"),
        Error::Parse(_)
    ));
    assert!(matches!(
        PipelineConfig::from_json_str("{\"width\": 10}"),
        Err(Error::Parse(_))
    ));
    assert!(matches!(
        PipelineConfig::from_json_str(
            "{\"width\": 10, \"height\": 10, \"steps\": [{\"kind\": \"gamma\", \"gamma\": [0.0, 2.0]}]}"
        ),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn programmatic_config_is_validated() {
    let cfg = PipelineConfig::resize_only(32, 32).with_step(StepConfig::Rotate(RotateConfig {
        degrees: [f32::NAN, 1.0].into(),
        ..Default::default()
    }));
    assert!(matches!(Pipeline::new(cfg), Err(Error::InvalidConfig(_))));
}

#[test]
fn ranges_parse_uniform_and_triangular() {
    use kp_augment::Range;
    let cfg = PipelineConfig::from_toml_str(
        "width = 8\nheight = 8\n[[steps]]\nkind = \"box_jitter\"\nshift_x = [-0.2, 0.2]\nshift_y = [-0.3, -0.1, 0.1]\nscale = [1.0, 1.0]\n",
    )
    .unwrap();
    match &cfg.steps[0] {
        StepConfig::BoxJitter(b) => {
            assert_eq!(b.shift_x, Range::uniform(-0.2, 0.2));
            assert_eq!(b.shift_y, Range::triangular(-0.3, -0.1, 0.1));
            assert_eq!(b.scale, Range::fixed(1.0));
        }
        other => panic!("{other:?}"),
    }
    let toml = cfg.to_toml_string().unwrap();
    assert!(toml.contains("[-0.3, -0.1, 0.1]"), "{toml}");
    // Wrong lengths fail to parse; a mode outside [min, max] is invalid.
    let bad = |r: &str| {
        PipelineConfig::from_toml_str(&format!(
            "width = 8\nheight = 8\n[[steps]]\nkind = \"rotate\"\ndegrees = {r}\n"
        ))
    };
    assert!(matches!(bad("[1.0]"), Err(Error::Parse(_))));
    assert!(matches!(bad("[1.0, 2.0, 3.0, 4.0]"), Err(Error::Parse(_))));
    assert!(matches!(
        bad("[1.0, 5.0, 3.0]"),
        Err(Error::InvalidConfig(_))
    ));
    assert!(bad("[1.0, 2.0, 3.0]").is_ok());
}

#[test]
fn range_quantiles() {
    use kp_augment::Range;
    let u = Range::uniform(-1.0, 3.0);
    assert_eq!(u.quantile(0.0), -1.0);
    assert_eq!(u.quantile(0.5), 1.0);
    assert_eq!(Range::fixed(2.5).quantile(0.7), 2.5);
    let t = Range::triangular(-0.23, -0.11, 0.08);
    assert!((t.quantile(0.0) + 0.23).abs() < 1e-6);
    assert!((t.quantile(1.0) - 0.08).abs() < 1e-6);
    // The CDF at the mode is (mode − min)/(max − min).
    let at_mode = (-0.11 + 0.23) / (0.08 + 0.23);
    assert!((t.quantile(at_mode) + 0.11).abs() < 1e-6);
    // Mean of a triangular distribution is (min + mode + max)/3.
    let n = 10_000;
    let mean: f64 = (0..n)
        .map(|i| t.quantile((i as f64 + 0.5) / n as f64))
        .sum::<f64>()
        / n as f64;
    assert!((mean - (-0.23 - 0.11 + 0.08) / 3.0).abs() < 1e-4, "{mean}");
    // Monotone.
    let qs: Vec<f64> = (0..=100).map(|i| t.quantile(i as f64 / 100.0)).collect();
    assert!(qs.windows(2).all(|w| w[0] <= w[1]));
}
