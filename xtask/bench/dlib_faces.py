#!/usr/bin/env python3
"""Counts the faces dlib's HOG detector (`dlib.get_frontal_face_detector`, dlib-bin from PyPI)
finds on each photo of a folder, beside `kp detect --json` on the same folder: the
any-photo issue's detection table.

    kp detect ../shared/datasets/dlib_examples_faces --json > /tmp/kp.jsonl
    python3 xtask/bench/dlib_faces.py ../shared/datasets/dlib_examples_faces --kp /tmp/kp.jsonl

Prints a Markdown table: photo, size, dlib HOG faces (upsample 1, dlib's example setting),
kp faces, and the smallest kp face width.
"""

import argparse
import json
import os
import sys

import dlib


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder")
    p.add_argument("--kp", required=True, help="kp detect --json output (JSON lines)")
    p.add_argument("--upsample", type=int, default=1)
    a = p.parse_args()
    kp = {}
    with open(a.kp) as fh:
        for line in fh:
            v = json.loads(line)
            kp[os.path.basename(v["image"])] = v
    hog = dlib.get_frontal_face_detector()
    print("| photo | size | dlib HOG faces | kp faces | smallest kp face (px) |")
    print("|---|---|---|---|---|")
    tot_d = tot_k = 0
    for name in sorted(kp):
        img = dlib.load_rgb_image(os.path.join(a.folder, name))
        d = len(hog(img, a.upsample))
        faces = kp[name]["faces"]
        small = min((f["box"][2] for f in faces), default=float("nan"))
        tot_d += d
        tot_k += len(faces)
        print(f"| {name} | {img.shape[1]}x{img.shape[0]} | {d} | {len(faces)} | {small:.0f} |")
    print(f"| all | | {tot_d} | {tot_k} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
