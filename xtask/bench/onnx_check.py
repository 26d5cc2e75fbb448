"""Checks ONNX files kp exported against kp's own outputs (run by `cargo xtask onnx`).

Usage: onnx_check.py MANIFEST.json

The manifest (written by xtask/src/onnx.rs):
  {"threads": 2, "rounds": 3, "cases": [{"name": ..., "onnx": FILE,
    "input": FILE, "input_shape": [N, C, H, W], "expected": FILE, "expected_shape": [N, K, 2]}]}
`input` and `expected` hold little-endian float32 values, row-major.

For each case: `onnx.checker.check_model(full_check=True)`, then the same input through
onnxruntime (CPUExecutionProvider, `threads` intra-op threads) and through OpenCV's
`cv2.dnn.readNetFromONNX` (`cv2.setNumThreads(threads)`); the largest absolute difference from
kp's output, and with `rounds` > 0 the median milliseconds of a run (after one warm-up run).
Prints one JSON object: {"cases": [{"name", "checker", "ort_max_diff", "ort_ms",
"opencv_max_diff", "opencv_ms", "opencv_error", "opset", "metadata"}]}; a runtime that fails
records its error instead of numbers.
"""

import json
import statistics
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import cv2


def timed(run, rounds):
    if rounds <= 0:
        return None
    run()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def check(case, threads, rounds):
    out = {"name": case["name"]}
    x = np.fromfile(case["input"], dtype="<f4").reshape(case["input_shape"])
    want = np.fromfile(case["expected"], dtype="<f4").reshape(case["expected_shape"])
    model = onnx.load(case["onnx"])
    out["opset"] = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    out["metadata"] = {p.key: p.value for p in model.metadata_props}
    try:
        onnx.checker.check_model(model, full_check=True)
        out["checker"] = "ok"
    except Exception as e:  # the checker's message is the result
        out["checker"] = str(e).splitlines()[0]

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(case["onnx"], opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    got = session.run(None, {name: x})[0]
    if got.shape != want.shape:
        out["ort_error"] = f"output shape {list(got.shape)}, kp's {list(want.shape)}"
    else:
        out["ort_max_diff"] = float(np.abs(got.astype(np.float64) - want).max())
    out["ort_ms"] = timed(lambda: session.run(None, {name: x}), rounds)

    cv2.setNumThreads(threads)
    try:
        net = cv2.dnn.readNetFromONNX(case["onnx"])
        net.setInput(x)
        got = net.forward()
        if tuple(got.shape) != want.shape:
            out["opencv_error"] = f"output shape {list(got.shape)}, kp's {list(want.shape)}"
        else:
            out["opencv_max_diff"] = float(np.abs(got.astype(np.float64) - want).max())

        def run():
            net.setInput(x)
            net.forward()

        out["opencv_ms"] = timed(run, rounds)
    except cv2.error as e:
        out["opencv_error"] = " ".join(str(e).split())[:300]
    return out


def main():
    with open(sys.argv[1]) as f:
        manifest = json.load(f)
    threads, rounds = manifest["threads"], manifest["rounds"]
    cases = [check(c, threads, rounds) for c in manifest["cases"]]
    versions = {"onnx": onnx.__version__, "onnxruntime": ort.__version__, "opencv": cv2.__version__}
    print(json.dumps({"versions": versions, "cases": cases}))


if __name__ == "__main__":
    main()
