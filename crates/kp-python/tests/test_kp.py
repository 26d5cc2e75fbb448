"""pytest suite of the kp Python package (run by .ci/run in a venv outside the clone).

Needs the datasets (KP_DATA_DIR, else ../shared/datasets beside the checkout) and, for the
comparison with the command line, the `kp` binary (KP_BIN, else CARGO_TARGET_DIR's
debug/kp or release/kp).
"""

import json
import logging
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import kp

ROOT = Path(__file__).resolve().parents[3]


def data_dir() -> Path:
    env = os.environ.get("KP_DATA_DIR")
    d = Path(env) if env else ROOT.parent / "shared" / "datasets"
    if not d.is_dir():
        pytest.skip(f"no datasets folder at {d}")
    return d


def photos():
    return sorted((data_dir() / "dlib_examples_faces").glob("*.jpg"))


def group_photo() -> Path:
    return data_dir() / "dlib_examples_faces" / "2008_002506.jpg"


def kp_binary() -> Path:
    if os.environ.get("KP_BIN"):
        return Path(os.environ["KP_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    for profile in ("debug", "release"):
        p = target / profile / "kp"
        if p.exists():
            return p
    found = shutil.which("kp")
    if not found:
        pytest.fail("no kp binary: set KP_BIN or build kp-cli")
    return Path(found)


@pytest.fixture(scope="module")
def lm():
    return kp.Landmarker()


def test_the_ready_model_finds_every_face_of_the_group_photo_with_68_float32_points(lm):
    faces = lm.predict(group_photo())
    assert len(faces) == 3  # three people
    for f in faces:
        assert f.keypoints.shape == (68, 2) and f.keypoints.dtype == np.float32
        assert f.points5.shape == (5, 2) and f.points5.dtype == np.float32
        left, top, w, h = f.box
        assert w > 0 and h > 0 and 0.0 <= f.score <= 1.0
        assert np.all(np.isfinite(f.keypoints))
    assert lm.scheme == "ibug68" and lm.model == "ready:ibug68-compact"
    assert "keypoints=(68, 2)" in repr(faces[0])


def test_predictions_equal_the_command_lines_on_the_same_photos(lm):
    paths = photos()[:4]
    lines = []
    for p in paths:
        out = subprocess.run(
            [str(kp_binary()), "predict", str(p), "--json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        lines += [json.loads(line) for line in out.splitlines() if line.strip()]
    by_image = {Path(x["image"]).name: x["faces"] for x in lines}
    assert len(by_image) == len(paths)
    for p in paths:
        cli = by_image[p.name]
        py = lm.predict(str(p))
        assert len(py) == len(cli), p
        for a, b in zip(py, cli):
            np.testing.assert_array_equal(np.float32(b["box"]), np.float32(a.box))
            np.testing.assert_array_equal(np.float32(b["keypoints"]), a.keypoints)
            np.testing.assert_array_equal(np.float32(b["points5"]), a.points5)
            assert np.float32(b["score"]) == np.float32(a.score)


def test_an_rgb_array_gives_what_its_png_file_gives(lm, tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    rgb = np.asarray(Image.open(group_photo()).convert("RGB"))
    png = tmp_path / "group.png"
    Image.fromarray(rgb).save(png)
    from_array = lm.predict(rgb)
    from_file = lm.predict(png)
    assert len(from_array) == len(from_file) == 3
    for a, b in zip(from_array, from_file):
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
    # A non-contiguous view and an RGBA array hold the same pixels.
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    for same in (rgba, np.ascontiguousarray(rgb[:, ::-1])[:, ::-1]):
        np.testing.assert_array_equal(lm.predict(same)[0].keypoints, from_array[0].keypoints)


def test_a_gray_array_is_the_rgb_array_with_three_equal_channels(lm):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 255, (96, 96), dtype=np.uint8)
    box = [(10.0, 10.0, 70.0, 70.0)]
    a = lm.predict(gray, boxes=box)[0].keypoints
    b = lm.predict(np.dstack([gray] * 3), boxes=box)[0].keypoints
    np.testing.assert_array_equal(a, b)


def test_a_photo_without_a_face_gives_an_empty_list(lm):
    blank = np.zeros((240, 320, 3), np.uint8)
    assert lm.predict(blank) == []
    assert lm.detect(blank) == []


def test_detect_gives_boxes_scores_and_5_points_without_keypoints(lm):
    found = lm.detect(str(group_photo()))
    assert len(found) == 3
    assert all(f.keypoints is None and f.points5.shape == (5, 2) for f in found)
    scores = [f.score for f in found]
    assert scores == sorted(scores, reverse=True)


def test_boxes_give_one_face_per_box_in_order(lm):
    faces = lm.predict(group_photo(), boxes=[(100, 50, 120, 120), (300, 60, 90, 90)])
    assert [f.box for f in faces] == [(100, 50, 120, 120), (300, 60, 90, 90)]
    assert all(f.score is None for f in faces)


def test_two_threads_predicting_at_once_get_what_one_thread_gets(lm):
    paths = photos()[:4]
    alone = [[f.keypoints for f in lm.predict(p)] for p in paths]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda p: [f.keypoints for f in lm.predict(p)], paths * 2))
    for got, want in zip(together, alone * 2):
        assert len(got) == len(want)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


def test_the_resnet_ready_model_and_a_run_folder_load():
    assert kp.Landmarker("resnet18").model == "ready:ibug68-heatmap-resnet18"
    wide = kp.Landmarker("compact-wide")
    assert wide.model == "ready:ibug68-compact-x1.5"
    assert len(wide.predict(group_photo())) == 3
    run = ROOT / "models" / "landmarks" / "ibug68-compact"
    faces = kp.Landmarker.from_run(run).predict(group_photo())
    assert len(faces) == 3


def test_a_missing_photo_is_a_file_not_found_error_naming_it(lm, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        lm.predict(tmp_path / "nope.jpg")


def test_a_file_that_is_not_an_image_is_a_kp_error_naming_it(lm, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(kp.KpError, match="bad.jpg"):
        lm.predict(bad)


@pytest.mark.parametrize(
    "image, needle",
    [
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((10, 10, 2), np.uint8), "shape"),
        (np.zeros((0, 10, 3), np.uint8), "pixels"),
        (np.zeros((2, 3, 4, 5), np.uint8), "shape"),
        (42, "path or a numpy"),
    ],
)
def test_bad_arrays_are_value_errors(lm, image, needle):
    with pytest.raises(ValueError, match=needle):
        lm.predict(image)


def test_bad_boxes_models_and_run_folders_are_errors_with_kps_message(tmp_path):
    lm = kp.Landmarker()
    with pytest.raises(ValueError, match="positive"):
        lm.predict(np.zeros((50, 50, 3), np.uint8), boxes=[(0, 0, -1, 5)])
    with pytest.raises(ValueError, match="compact, compact-wide or resnet18"):
        kp.Landmarker("vgg")
    empty = tmp_path / "empty-run"
    empty.mkdir()
    with pytest.raises((kp.KpError, FileNotFoundError), match="empty-run"):
        kp.Landmarker.from_run(empty)


def test_load_dataset_gives_every_imm_face_with_58_points():
    faces = kp.load_dataset(data_dir() / "imm_face_db")
    assert len(faces) == 240
    assert faces[0]["keypoints"].shape == (58, 2)
    assert faces[0]["keypoints"].dtype == np.float32
    assert Path(faces[0]["image"]).exists()
    with pytest.raises(FileNotFoundError):
        kp.load_dataset(data_dir() / "no-such-dataset")


def test_train_returns_the_summary_and_logs_to_the_kp_logger(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="kp")
    summary = kp.train(
        "nose",
        tmp_path / "run",
        data=data_dir(),
        epochs=1,
        limit=12,
        batch_size=4,
        split={"kind": "random", "val_fraction": 0.25},
    )
    assert summary["epochs"] == 1 and summary["model"] == "nosetipnet"
    assert (summary["train_faces"], summary["val_faces"]) == (9, 3)
    assert (tmp_path / "run" / "summary.json").exists()
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk == summary
    assert any(r.name == "kp" for r in caplog.records)
    # The run folder predicts from Python too (the IMM model sees the whole photo).
    faces = kp.Landmarker.from_run(tmp_path / "run").predict(
        data_dir() / "imm_face_db" / "01-1m.jpg"
    )
    assert len(faces) == 1 and faces[0].keypoints.shape == (1, 2)


def test_train_refuses_unknown_fields_tasks_and_values(tmp_path):
    with pytest.raises(ValueError, match="unknown configuration field `epoch`"):
        kp.train("nose", tmp_path / "a", epoch=1)
    with pytest.raises(ValueError, match="task `noze`"):
        kp.train("noze", tmp_path / "b")
    with pytest.raises(ValueError, match="invalid configuration"):
        kp.train("nose", tmp_path / "c", epochs="many")
