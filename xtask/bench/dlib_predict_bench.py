#!/usr/bin/env python3
"""Times dlib's whole photo-to-68-points pipeline on one photo: the peer of kp's `predict`
case in `cargo xtask bench --against-dlib` (same photo, decoded once, same invocation).

One call = `dlib.get_frontal_face_detector()` (HOG) on the photo, then
`shape_predictor_68_face_landmarks` (dlib-bin + face-recognition-models from PyPI) on every
face it finds: what `kp predict` does with YuNet and the ready model. dlib's detector and
shape predictor run on one thread whatever `--threads` says (dlib has no thread setting for
them); `--upsample` 0 is the fastest setting that finds a face of 100 px or more.

Prints one JSON object: {"case": NAME, "ms": median ms per call, "faces": N,
"shape_ms": median ms of the shape predictor alone per face}.
"""

import argparse
import json
import statistics
import sys
import time

import dlib
import face_recognition_models


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--upsample", type=int, default=0)
    a = p.parse_args()
    try:
        img = dlib.load_rgb_image(a.image)
    except RuntimeError as e:
        print(f"error: {a.image}: {e}", file=sys.stderr)
        return 1
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
    times, shape_times, n = [], [], 0
    for i in range(a.warmup + a.iters):
        t0 = time.perf_counter()
        rects = detector(img, a.upsample)
        t1 = time.perf_counter()
        shapes = [predictor(img, r) for r in rects]
        t2 = time.perf_counter()
        n = len(shapes)
        if i >= a.warmup:
            times.append((t2 - t0) * 1e3)
            if n:
                shape_times.append((t2 - t1) * 1e3 / n)
    if n == 0:
        print(f"error: {a.image}: dlib's detector found no face", file=sys.stderr)
        return 1
    print(json.dumps({"case": a.case, "ms": statistics.median(times), "faces": n,
                      "shape_ms": statistics.median(shape_times)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
