#!/usr/bin/env python3
"""dlib's 68-point shape predictor beside kp on the same faces and boxes: the accuracy
issue's comparison, in one script.

    kp eval --split val --faces /tmp/kp_val.jsonl                 # the ready model, dataset boxes
    python3 xtask/bench/dlib_landmarks.py /tmp/kp_val.jsonl [--json OUT] [--errors OUT.csv]

Input: `kp eval --faces` JSON lines, one face each: {"image", "box": [left, top, width,
height], "truth": [[x, y] x 68], "pred": [[x, y] x 68], "nme"}, in original pixels. dlib
(`dlib-bin` + `face-recognition-models` from PyPI: `shape_predictor_68_face_landmarks.dat`)
gets each face's image and the same box as a `dlib.rectangle`. Both systems are scored here
with one formula: NME = mean point error / distance of the outer eye corners (points 36 and
45), failure rate = share of faces above 8%, AUC at 8% and 10% = mean of max(0, 1 - NME / t)
(kp_viz::auc). kp's NME is recomputed from its points and checked against kp's own.

`--dlib-boxes hog` gives dlib instead the box of its own HOG detector (upsampled once) that
overlaps kp's box most, the convention dlib's model was trained with; faces it does not find
(IoU < 0.3) are counted and left out of both systems' rows, so both are scored on the same faces.

Prints a Markdown table; `--json` writes {"faces", "dlib_boxes", "missed", "rows": [{"system", "nme", "fr_8", "auc_8",
"fr_10", "auc_10", "mean_px"}]}, `--errors` one CSV row per face (image,kp_nme,dlib_nme) for CED curves.
dlib's model was trained on all of 300-W, very likely on these faces too.
"""

import argparse
import json
import math
import os
import sys

import dlib
import face_recognition_models


def nme(pred, truth):
    (ax, ay), (bx, by) = truth[36], truth[45]
    d = math.hypot(ax - bx, ay - by)
    err = sum(math.hypot(p[0] - t[0], p[1] - t[1]) for p, t in zip(pred, truth)) / len(truth)
    return err / d, err


def iou(a, b):
    """Intersection over union of two dlib.rectangles."""
    w = min(a.right(), b.right()) - max(a.left(), b.left())
    h = min(a.bottom(), b.bottom()) - max(a.top(), b.top())
    inter = max(0, w) * max(0, h)
    union = a.width() * a.height() + b.width() * b.height() - inter
    return inter / union if union > 0 else 0.0


def stats(errors):
    n = len(errors)
    out = {"nme": sum(e for e, _ in errors) / n, "mean_px": sum(p for _, p in errors) / n}
    for t in (0.08, 0.10):
        out[f"fr_{round(t * 100)}"] = sum(1 for e, _ in errors if not e <= t) / n
        out[f"auc_{round(t * 100)}"] = sum(max(0.0, 1 - e / t) for e, _ in errors) / n
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("faces", help="kp eval --faces output (JSON lines)")
    p.add_argument("--json", help="write the table as JSON here")
    p.add_argument("--errors", help="write per-face NMEs as CSV here")
    p.add_argument("--dlib-boxes", choices=["same", "hog"], default="same",
                   help="dlib's box: kp's (same) or its HOG detector's (hog)")
    a = p.parse_args()
    faces = [json.loads(line) for line in open(a.faces) if line.strip()]
    if not faces:
        print(f"{a.faces}: no faces", file=sys.stderr)
        return 1
    predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
    hog = dlib.get_frontal_face_detector() if a.dlib_boxes == "hog" else None
    images = {}
    kp_err, dlib_err, rows = [], [], []
    missed = 0
    for i, f in enumerate(faces):
        if len(f["truth"]) != 68 or f["box"] is None:
            print(f"{a.faces}: line {i + 1}: needs 68 truth points and a box", file=sys.stderr)
            return 1
        path = f["image"]
        if path not in images:
            images.clear()  # faces of one photo are consecutive; keep one decoded photo
            images[path] = dlib.load_rgb_image(path)
        l, t, w, h = f["box"]
        rect = dlib.rectangle(round(l), round(t), round(l + w), round(t + h))
        if hog is not None:
            found = [(iou(r, rect), r) for r in hog(images[path], 1)]
            best = max(found, key=lambda x: x[0], default=(0.0, None))
            if best[0] < 0.3:
                missed += 1
                continue
            rect = best[1]
        shape = predictor(images[path], rect)
        pts = [(shape.part(j).x, shape.part(j).y) for j in range(68)]
        k = nme(f["pred"], f["truth"])
        if f.get("nme") is not None and abs(k[0] - f["nme"]) > 1e-4:
            print(f"{a.faces}: line {i + 1}: kp's NME {f['nme']:.6f} != {k[0]:.6f} recomputed",
                  file=sys.stderr)
            return 1
        d = nme(pts, f["truth"])
        kp_err.append(k)
        dlib_err.append(d)
        rows.append((os.path.basename(path), k[0], d[0]))
    if not kp_err:
        print(f"{a.faces}: dlib's detector found none of the {len(faces)} faces", file=sys.stderr)
        return 1
    table = [dict(system="kp", **stats(kp_err)), dict(system="dlib", **stats(dlib_err))]
    print(f"{len(kp_err)} faces from {a.faces}"
          + (f" ({missed} not found by dlib's HOG detector, left out)" if hog else ""))
    print("| system | NME | FR@8% | AUC@8% | FR@10% | AUC@10% | mean error px |")
    print("|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['system']} | {r['nme'] * 100:.2f}% | {r['fr_8'] * 100:.2f}% | "
              f"{r['auc_8']:.4f} | {r['fr_10'] * 100:.2f}% | {r['auc_10']:.4f} | "
              f"{r['mean_px']:.2f} |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"faces": len(kp_err), "dlib_boxes": a.dlib_boxes, "missed": missed,
                       "rows": table}, fh, indent=2)
    if a.errors:
        with open(a.errors, "w") as fh:
            fh.write("image,kp_nme,dlib_nme\n")
            for name, k, d in rows:
                fh.write(f"{name},{k:.6f},{d:.6f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
