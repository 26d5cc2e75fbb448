#!/usr/bin/env python3
"""Times OpenCV's YuNet (`cv2.FaceDetectorYN`) on one photo: the peer of kp's detector case in
`cargo xtask bench` (same ONNX file, same photo, same thread count, same invocation).

Prints one JSON object: {"case": NAME, "ms": median ms per detect call, "faces": N}.
"""

import argparse
import json
import statistics
import sys
import time

import cv2


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--score-threshold", type=float, default=0.6)
    a = p.parse_args()
    cv2.setNumThreads(a.threads)
    img = cv2.imread(a.image, cv2.IMREAD_COLOR)
    if img is None:
        print(f"error: cannot read {a.image}", file=sys.stderr)
        return 1
    h, w = img.shape[:2]
    det = cv2.FaceDetectorYN.create(a.model, "", (w, h), a.score_threshold, 0.3, 5000)
    faces = None
    times = []
    for i in range(a.warmup + a.iters):
        t0 = time.perf_counter()
        _, faces = det.detect(img)
        if i >= a.warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    n = 0 if faces is None else len(faces)
    print(json.dumps({"case": a.case, "ms": statistics.median(times), "faces": n}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
