#!/usr/bin/env bash
# The GPU check of kp (issue #5), run once on a lent GPU machine from the repository root.
#
# Needs, in $KP_GPU_DIR (default .gpu): kp.xz (a stripped, xz-compressed `kp` built here with
# `--features cuda` or `cudnn`, see ../shared/gpu/README.md) and datasets/ibug_300w_train_crops/
# (the 300-W train crops). Optional: cuda_ops.xz (the test binary of `cargo test --release -p
# kp-models --features cudnn --test cuda_ops --no-run`: each CUDA layer against the CPU's) and
# xtask.xz (xtask built with `--features cudnn`: then the study's 300-W part, `reproduce --only
# ibug --device cuda`, runs too; it also needs datasets/ibug_300W_large_face_landmark_dataset/
# labels_ibug_300W_test_parsed.xml for the Kaggle submission). A `kp` built with `--features
# cudnn,nccl` (libnccl.so from PyPI's nvidia-nccl-cu13 on LIBRARY_PATH) also runs the NCCL step:
# `kp train --devices 0` (a world of one through NCCL) against plain `kp train`.
# The machine provides python3 with PyTorch and its CUDA libraries. Writes logs, JSON lines and
# a summary table under $OUT (default /tmp/kp-gpu-out).
#
# Steps: unpack and check the libraries, a smoke test (the same tiny training run on the CPU and
# on the GPU must log the same first loss), then the timings: training steps of ResNet18 at batch
# 16/64/256 in kp (its convolution backwards, candle's, and with TF32) and in PyTorch on the same GPU, and
# `kp train --device cuda` on the real faces; the table last.
set -u
G=${KP_GPU_DIR:-.gpu}
# Everything is written to $W; at the end $OUT gets table.md and gpu-check.tgz of $W (the device
# tool brings back at most 8 files).
FINAL=${OUT:-/tmp/kp-gpu-out}
OUT=/tmp/kp-gpu-work
rm -rf "$OUT"
mkdir -p "$OUT" "$FINAL"
pack() { cp "$OUT/table.md" "$FINAL/" 2>/dev/null; tar -C "$OUT" -czf "$FINAL/gpu-check.tgz" .; }
trap pack EXIT
BATCHES=${KP_GPU_BATCHES:-16,64,256}
# For a dry run of this script on a machine without a GPU: KP_GPU_DEVICE=cpu, PY=<python with torch>.
DEV=${KP_GPU_DEVICE:-cuda}
PY=${PY:-python3}
# Faces for the `kp train` timings (all by default; fewer for a dry run).
LIMIT=${KP_GPU_TRAIN_LIMIT:+--limit $KP_GPU_TRAIN_LIMIT}
say() { echo "== $(date +%T) $*"; }

say "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt" || true
"$PY" -c 'import torch; print("torch", torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))' | tee -a "$OUT/gpu.txt"

say "unpack"
xz -dc "$G/kp.xz" > /tmp/kp && chmod +x /tmp/kp || exit 1
LIBS=$(python3 -c 'import site,glob; print(":".join(sorted({p.rsplit("/",1)[0] for s in site.getsitepackages() for p in glob.glob(s+"/nvidia/**/lib*.so*", recursive=True)})))')
export LD_LIBRARY_PATH="$LIBS:${LD_LIBRARY_PATH:-}"
ldd /tmp/kp | grep -E "not found|cuda|cublas|curand" | tee "$OUT/ldd.txt"
/tmp/kp --version || exit 1

if [ -f "$G/cuda_ops.xz" ]; then
  say "kp-models CUDA layer tests (against the CPU)"
  xz -dc "$G/cuda_ops.xz" > /tmp/cuda_ops && chmod +x /tmp/cuda_ops
  timeout 120 /tmp/cuda_ops --test-threads 1 --nocapture 2>&1 | tee "$OUT/cuda_ops.txt" | grep -E "relative|test |panicked|result"
fi

XML="$G/datasets/ibug_300w_train_crops/labels_ibug_300W_train_crops.xml"
say "smoke: the same tiny run on cpu and $DEV"
for dev in cpu "$DEV"; do
  rm -rf "/tmp/smoke-$dev"
  timeout 120 /tmp/kp train --task ibug --data "$XML" --limit 16 --epochs 1 --batch-size 4 \
    --device "$dev" --out "/tmp/smoke-$dev" --quiet > "$OUT/smoke-$dev.log" 2>&1
  echo "$dev rc $?"; tail -3 "$OUT/smoke-$dev.log"
done
python3 - "$DEV" <<'EOF' | tee "$OUT/smoke.txt"
import csv
import sys
rows = {d: list(csv.DictReader(open(f"/tmp/smoke-{d}/metrics.csv"))) for d in ("cpu", sys.argv[1])}
for a, b in zip(rows["cpu"], rows[sys.argv[1]]):
    la, lb = float(a["loss"]), float(b["loss"])
    print(f"smoke {a['split']:5} step {a['step']:>2}: cpu {la:.6f} {sys.argv[1]} {lb:.6f} rel {abs(la-lb)/abs(la):.2e}")
EOF

say "kp bench (training steps)"
: > "$OUT/kp_bench.jsonl"
# Variants: the build's default convolution backward (cuDNN's kernels in a `cudnn` build), kp's
# convolutions of the output gradient, candle's own backward; TF32 for cuBLAS's f32 products.
VARIANTS=${KP_GPU_VARIANTS:-"default;--tf32"}
IFS=';' read -ra VARS <<< "$VARIANTS"
for variant in "${VARS[@]}"; do
  timeout 200 /tmp/kp bench --device "$DEV" --model resnet18 --batch-size "$BATCHES" \
    --warmup 3 --iters 15 --json ${variant#default} | tee -a "$OUT/kp_bench.jsonl"
done
timeout 60 /tmp/kp bench --device "$DEV" --model resnet18 --batch-size 64 --infer --json \
  | tee -a "$OUT/kp_bench.jsonl"

say "PyTorch (training steps)"
CASES=$(python3 -c "print(','.join(f'resnet18:{b}:train:15' for b in '$BATCHES'.split(',')))")
: > "$OUT/torch_bench.jsonl"
for tf in default off; do
  timeout 200 "$PY" xtask/bench/torch_bench.py --device "$DEV" --tf32 $tf --cases "$CASES" \
    | sed "s/}\$/, \"tf32\": \"$tf\"}/" | tee -a "$OUT/torch_bench.jsonl"
done
timeout 60 "$PY" xtask/bench/torch_bench.py --device "$DEV" --cases resnet18:64:infer:15 \
  | sed 's/}$/, "tf32": "default"}/' | tee -a "$OUT/torch_bench.jsonl"

say "kp train --device $DEV on the 300-W crops"
for b in ${BATCHES//,/ }; do
  rm -rf "/tmp/train-b$b"
  timeout 240 /tmp/kp train --task ibug --data "$XML" $LIMIT --epochs 3 --batch-size "$b" \
    --device "$DEV" --out "/tmp/train-b$b" --quiet --json > "$OUT/train-b$b.json" 2> "$OUT/train-b$b.log"
  echo "b$b rc $?"
  cp "/tmp/train-b$b/timing.json" "$OUT/timing-b$b.json" 2>/dev/null && cat "$OUT/timing-b$b.json"
done

if ldd /tmp/kp | grep -q nccl; then
  say "NCCL: a world of one (kp train --devices 0) against plain training"
  for v in plain nccl; do
    rm -rf "/tmp/dp-$v"
    extra=""; [ $v = nccl ] && extra="--devices 0"
    timeout 180 /tmp/kp train --task ibug --data "$XML" --limit 256 --epochs 2 --batch-size 32 \
      --device "$DEV" $extra --out "/tmp/dp-$v" --quiet > "$OUT/dp-$v.log" 2>&1
    echo "$v rc $?"; cat "/tmp/dp-$v/timing.json" 2>/dev/null; echo
  done
  grep -i nccl "$OUT/dp-nccl.log" | head -3
  python3 - <<'EOF2' | tee "$OUT/nccl.txt"
import csv
a, b = (list(csv.DictReader(open(f"/tmp/dp-{v}/metrics.csv"))) for v in ("plain", "nccl"))
worst = max(abs(float(x["loss"]) - float(y["loss"])) / abs(float(x["loss"])) for x, y in zip(a, b))
print(f"NCCL world of one: {len(a)} / {len(b)} metric rows, largest relative loss difference {worst:.2e}")
EOF2
fi

if [ -f "$G/xtask.xz" ]; then
  say "xtask reproduce --only ibug --device $DEV (the study's 300-W part)"
  xz -dc "$G/xtask.xz" > /tmp/xtask && chmod +x /tmp/xtask
  rm -rf /tmp/repro
  /usr/bin/time -v timeout 400 /tmp/xtask reproduce --only ibug --device "$DEV" \
    --data "$G/datasets" --out /tmp/repro > "$OUT/reproduce.log" 2>&1
  echo "rc $?"; grep -E "Elapsed|Maximum resident" "$OUT/reproduce.log"
  tar -C /tmp/repro --exclude='*.safetensors' --exclude='*.png' -czf "$OUT/reproduce.tgz" . 2>/dev/null
fi

if [ -n "${KP_GPU_NCU:-}" ]; then
  # Per-kernel GPU time of one training step and one inference pass at batch 64 (Nsight
  # Compute, one metric, clocks left alone), summed by kernel name.
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  for mode in train infer; do
    say "ncu: kp resnet18 $mode b64"
    flag=""; [ $mode = infer ] && flag="--infer"
    [ $mode = infer ] && [ -n "${KP_GPU_NCU_TRAIN_ONLY:-}" ] && continue
    timeout 200 "$NCU" --clock-control none --metrics gpu__time_duration.sum --csv --page raw \
      --log-file "$OUT/ncu-$mode.csv" /tmp/kp bench --device "$DEV" --model resnet18 \
      --batch-size 64 --warmup 0 --iters 1 $flag > "$OUT/ncu-$mode.out" 2>&1
    echo "rc $?"
    python3 - "$OUT/ncu-$mode.csv" <<'EOF' | tee "$OUT/ncu-$mode.txt"
import csv, sys, collections
lines = [l for l in open(sys.argv[1]) if not l.startswith("==")]
rows = list(csv.DictReader(lines))
units = rows[0].get("gpu__time_duration.sum", "")
t, n = collections.Counter(), collections.Counter()
for r in rows[1:]:
    try:
        v = float(r["gpu__time_duration.sum"].replace(",", ""))
    except (KeyError, ValueError):
        continue
    name = r["Kernel Name"].split("(")[0][:70]
    t[name] += v; n[name] += 1
total = sum(t.values())
print(f"{len(rows)-1} kernels, total {total:.0f} {units}")
for name, v in t.most_common(30):
    print(f"{100*v/total:5.1f}%  {v:12.0f} {units}  x{n[name]:<5} {name}")
EOF
  done
fi

say "table"
python3 - "$OUT" <<'EOF' | tee "$OUT/table.md"
import json, sys, glob, os
out = sys.argv[1]
kp = [json.loads(l) for l in open(f"{out}/kp_bench.jsonl") if l.startswith("{")]
tb = [json.loads(l) for l in open(f"{out}/torch_bench.jsonl") if l.startswith("{")]
def torch_ms(case, tf):
    m = [r["ms"] for r in tb if r["case"] == case and r["tf32"] == tf]
    return m[0] if m else None
print("| case | kp variant | kp ms | kp img/s | PyTorch ms (default / TF32 off) | PyTorch img/s (default) | kp / PyTorch img/s |")
print("|---|---|---|---|---|---|---|")
for r in kp:
    variant = r.get("conv_backward", "") + (" + TF32 GEMMs" if r["tf32"] else "")
    td, to = torch_ms(r["case"], "default"), torch_ms(r["case"], "off")
    b = r["batch"]
    t_img = b / (td / 1e3) if td else None
    fmt = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"
    share = None if t_img is None else r["images_per_second"] / t_img
    print(f"| {r['case']} | {variant} | {r['median_ms']:.2f} | {r['images_per_second']:.0f} | {fmt(td, 2)} / {fmt(to, 2)} | {fmt(t_img, 0)} | {fmt(share and 100 * share, 0)}% |")
print()
print("| kp train (GPU) | epochs (s) | steady img/s (epochs 2+) |")
print("|---|---|---|")
for f in sorted(glob.glob(f"{out}/timing-b*.json"), key=lambda p: int(p.split("-b")[-1][:-5])):
    t = json.load(open(f))
    eps = t.get("epoch_seconds", [])
    n = json.load(open(f.replace("timing-", "train-")))["train_faces"]
    steady = n * (len(eps) - 1) / sum(eps[1:]) if len(eps) > 1 else None
    print(f"| batch {f.split('-b')[-1][:-5]} | {' '.join(f'{e:.2f}' for e in eps)} | {steady and round(steady)} |")
EOF
say "done"
