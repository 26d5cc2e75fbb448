#!/usr/bin/env python3
"""Writes OpenCV's YuNet detections for kp's detector fixture set (the oracle of kp's YuNet).

`cv2.FaceDetectorYN` (opencv-python-headless from PyPI) runs the same ONNX file kp loads, on
each fixture image at its own size (no resizing), and the detections go to a JSON file that
kp's tests compare against without needing OpenCV. With `--decoded DIR` OpenCV reads the images
as kp decodes them (PNGs written by `cargo run -p kp-tests --example decode_fixtures`), so both
sides see the same pixels; JPEG decoders differ slightly, and without it small faces move by
up to half a pixel:

    cargo run -p kp-tests --example decode_fixtures -- tests/data/yunet_opencv.json /tmp/kp-decoded
    python3 xtask/bench/yunet_reference.py --data ../shared/datasets \
        --decoded /tmp/kp-decoded --model models/yunet/yunet_n_dynamic.onnx \
        --out tests/data/yunet_opencv.json

JSON: {"opencv": VERSION, "model": FILE, "score_threshold": s, "nms_threshold": t, "top_k": k,
"images": [{"path": PATH (relative to --data), "width": w, "height": h,
"faces": [{"box": [x, y, w, h], "points5": [[x, y] x5], "score": s}, ...]}]}
in OpenCV's order (score descending).
"""

import argparse
import json
import os
import sys

import cv2

# Fixture images, relative to the datasets folder: dlib's sample photos (full photos, one to
# many faces), a lossless 300-W photo, IMM faces (one grey-scale), 300-W training crops.
FIXTURES = [
    "dlib_examples_faces/2007_007763.jpg",
    "dlib_examples_faces/2008_001009.jpg",
    "dlib_examples_faces/2008_001322.jpg",
    "dlib_examples_faces/2008_002079.jpg",
    "dlib_examples_faces/2008_002470.jpg",
    "dlib_examples_faces/2008_002506.jpg",
    "dlib_examples_faces/2008_004176.jpg",
    "dlib_examples_faces/2008_007676.jpg",
    "dlib_examples_faces/2009_004587.jpg",
    "ibug_300w_pts_samples/lfpw/testset/image_0010.png",
    "imm_face_db/01-1m.jpg",
    "imm_face_db/02-1m.jpg",
    "imm_face_db/15-3f.jpg",
    "imm_face_db/40-6m.jpg",
    "ibug_300w_train_crops/images/afw/afw/1051618982_1_0.jpg",
    "ibug_300w_train_crops/images/helen/trainset/151902153_1_0.jpg",
    "ibug_300w_train_crops/images/helen/trainset/110592002_1_0.jpg",
    "ibug_300w_train_crops/images/helen/testset/296814969_3_0.jpg",
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the datasets folder (KP_DATA_DIR)")
    p.add_argument("--model", required=True, help="YuNet ONNX file")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--decoded", help="folder of the images as kp decodes them (PNG)")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.add_argument("--nms-threshold", type=float, default=0.3)
    p.add_argument("--top-k", type=int, default=5000)
    a = p.parse_args()

    images = []
    for rel in FIXTURES:
        path = os.path.join(a.data, rel)
        if a.decoded:
            path = os.path.join(a.decoded, rel.replace("/", "_") + ".png")
        img = cv2.imread(path, cv2.IMREAD_COLOR)  # BGR, as FaceDetectorYN expects
        if img is None:
            print(f"error: cannot read {path}", file=sys.stderr)
            return 1
        h, w = img.shape[:2]
        det = cv2.FaceDetectorYN.create(
            a.model, "", (w, h), a.score_threshold, a.nms_threshold, a.top_k
        )
        _, faces = det.detect(img)
        out = []
        for f in [] if faces is None else faces:
            f = [float(v) for v in f]
            out.append(
                {
                    "box": f[0:4],
                    "points5": [[f[4 + 2 * i], f[5 + 2 * i]] for i in range(5)],
                    "score": f[14],
                }
            )
        images.append({"path": rel, "width": w, "height": h, "faces": out})
        print(f"{rel}: {len(out)} faces", file=sys.stderr)

    doc = {
        "opencv": cv2.__version__,
        "model": os.path.basename(a.model),
        "pixels": "decoded by kp" if a.decoded else "decoded by OpenCV",
        "score_threshold": a.score_threshold,
        "nms_threshold": a.nms_threshold,
        "top_k": a.top_k,
        "images": images,
    }
    tmp = a.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")
    os.replace(tmp, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
