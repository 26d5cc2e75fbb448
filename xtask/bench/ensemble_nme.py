#!/usr/bin/env python3
"""Test-time ensembles of kp runs, scored on the same faces: each run's points averaged per
face, against each run alone. The accuracy issue's "is an ensemble worth shipping" question.

    for r in RUN0 RUN1 RUN2; do kp eval --run $r --split val --faces $r.val.jsonl; done
    python3 xtask/bench/ensemble_nme.py RUN0.val.jsonl RUN1.val.jsonl RUN2.val.jsonl [--json OUT]

Input: `kp eval --faces` JSON lines, one face each: {"image", "box", "truth", "pred", "nme"},
in original pixels; every file must hold the same faces (the same image and box). Scored with
kp's formula (kp_train::metrics, kp_viz::auc): NME = mean point error / distance of the outer
eye corners (points 36 and 45), failure rate = share of faces above 8% (and 10%), AUC at 8% =
mean of max(0, 1 - NME / 0.08). Each run's NME is recomputed from its points and checked
against kp's own, so the ensemble row uses the same definition.

Prints one line per run and one for the ensemble; `--json` writes {"faces", "rows": [{"name",
"nme", "fr_8", "auc_8", "fr_10"}]} (fractions, not percent).
"""

import argparse
import json
import math
import os
import sys


def load(path):
    faces = {}
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            try:
                r = json.loads(line)
                faces[(r["image"], tuple(r["box"]))] = r
            except (ValueError, KeyError) as e:
                sys.exit(f"{path}:{line_no}: not a kp eval --faces line ({e})")
    return faces


def nme(pred, truth):
    return sum(math.dist(p, t) for p, t in zip(pred, truth)) / len(truth) / math.dist(
        truth[36], truth[45]
    )


def row(name, errs):
    n = len(errs)
    return {
        "name": name,
        "nme": sum(errs) / n,
        "fr_8": sum(e > 0.08 for e in errs) / n,
        "auc_8": sum(max(0.0, 1.0 - e / 0.08) for e in errs) / n,
        "fr_10": sum(e > 0.10 for e in errs) / n,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("faces", nargs="+", help="kp eval --faces files, one per run")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    runs = [load(p) for p in args.faces]
    keys = sorted(runs[0])
    for path, run in zip(args.faces, runs):
        if set(run) != set(keys):
            sys.exit(f"{path}: not the same faces as {args.faces[0]}")
    rows = []
    for path, run in zip(args.faces, runs):
        errs = [nme(run[k]["pred"], run[k]["truth"]) for k in keys]
        worst = max(abs(a - run[k]["nme"]) for a, k in zip(errs, keys))
        if worst > 1e-6:
            sys.exit(f"{path}: NME recomputed differs from kp's by {worst}")
        rows.append(row(path, errs))
    ensemble = []
    for k in keys:
        preds = [run[k]["pred"] for run in runs]
        mean = [
            [sum(p[j][c] for p in preds) / len(preds) for c in (0, 1)]
            for j in range(len(preds[0]))
        ]
        ensemble.append(nme(mean, runs[0][k]["truth"]))
    rows.append(row(f"ensemble of {len(runs)}", ensemble))
    for r in rows:
        print(
            f"{r['name']}: NME {100 * r['nme']:.3f}%  FR@8% {100 * r['fr_8']:.2f}%  "
            f"AUC@8% {r['auc_8']:.4f}  FR@10% {100 * r['fr_10']:.2f}%  ({len(keys)} faces)"
        )
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump({"faces": len(keys), "rows": rows}, f, indent=2)
        os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
    main()
