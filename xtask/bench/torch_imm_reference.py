"""PyTorch reference for the seed's IMM experiments (a cross-check of kp's accuracy).

Trains the seed's NoseTipNet (nose tip, 80x60) or FaceKeypointNet (58 points, 160x120) with the
seed's recipe on the IMM Face Database, standard split (persons 1-32 train, 33-40 validation),
with the same conventions as kp: grayscale in [-0.5, 0.5], bilinear resize, targets x/W, y/H,
MSE + Adam, no augmentation unless --shift is given. Prints one JSON object with the validation
mean point error in network-input pixels.

    python xtask/bench/torch_imm_reference.py --task nose --data ../shared/datasets/imm_face_db

Needs torch, numpy and pillow (pip install torch numpy pillow).
"""
import argparse
import glob
import json
import os
import random
import time

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from torch_bench import FaceKeypointNet, NoseTipNet

NOSE_TIP = 52


def read_asf(path):
    pts = []
    with open(path) as f:
        lines = [l for l in f if l.strip() and not l.startswith("#")]
    n = int(lines[0])
    for line in lines[1 : 1 + n]:
        cols = line.split()
        pts.append((float(cols[2]), float(cols[3])))
    return np.array(pts, dtype=np.float32)


def load(data, w, h):
    faces = []
    for asf in sorted(glob.glob(os.path.join(data, "*.asf"))):
        name = os.path.basename(asf)
        person = int(name.split("-")[0])
        img = Image.open(asf[:-4] + ".jpg").convert("L").resize((w, h), Image.BILINEAR)
        x = np.asarray(img, dtype=np.float32) / 255.0 - 0.5
        faces.append((person, x, read_asf(asf)))
    return faces


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", choices=["nose", "face"], default="nose")
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--shift", type=float, default=0.0, help="random shift in input pixels")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    random.seed(a.seed)
    nose = a.task == "nose"
    w, h = (80, 60) if nose else (160, 120)
    epochs = a.epochs or (25 if nose else 30)
    bs = a.batch_size or (1 if nose else 2)
    lr = a.lr or (1e-3 if nose else 3e-4)
    model = NoseTipNet() if nose else FaceKeypointNet()
    faces = load(a.data, w, h)

    def tensors(subset):
        xs = torch.tensor(np.stack([f[1] for f in subset]))[:, None]
        pts = np.stack([f[2][[NOSE_TIP]] if nose else f[2] for f in subset])
        return xs, torch.tensor(pts.reshape(len(subset), -1))

    train_x, train_y = tensors([f for f in faces if f[0] <= 32])
    val_x, val_y = tensors([f for f in faces if f[0] > 32])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.MSELoss()
    t0 = time.time()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train_x))
        for i in range(0, len(order), bs):
            idx = order[i : i + bs]
            x, y = train_x[idx], train_y[idx]
            if a.shift > 0:
                # Integer shifts of image and targets (zeros fill the border).
                xs, ys = [], []
                for xi, yi in zip(x, y):
                    dx = random.randint(-int(a.shift), int(a.shift))
                    dy = random.randint(-int(a.shift), int(a.shift))
                    xi = torch.roll(xi, (dy, dx), (1, 2))
                    yi = yi.view(-1, 2) + torch.tensor([dx / w, dy / h])
                    xs.append(xi)
                    ys.append(yi.view(-1))
                x, y = torch.stack(xs), torch.stack(ys)
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(val_x).view(len(val_x), -1, 2)
    gt = val_y.view(len(val_x), -1, 2)
    scale = torch.tensor([w, h], dtype=torch.float32)
    err = ((pred - gt) * scale).norm(dim=2).mean(dim=1)
    print(
        json.dumps(
            {
                "task": a.task,
                "epochs": epochs,
                "batch_size": bs,
                "lr": lr,
                "val_faces": len(val_x),
                "val_mse": float(((pred - gt) ** 2).mean()),
                "mean_px_error_input": float(err.mean()),
                "median_px_error_input": float(err.median()),
                "train_seconds": time.time() - t0,
            }
        )
    )


if __name__ == "__main__":
    main()
