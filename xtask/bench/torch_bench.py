"""PyTorch side of `cargo xtask bench --against-torch`.

Times the same cases as kp's benchmark on the CPU (same threads) or, with `--device cuda`, on a
GPU (used by `xtask/bench/gpu_check.sh`): a training step is
forward + MSE loss + backward + Adam update; inference is a forward pass in eval mode.
Prints one JSON object per line: {"case": ..., "ms": median milliseconds}.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn


class NoseTipNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 16, 3), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(16, 32, 3), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2, 2),
        )
        self.mlp = nn.Sequential(nn.Linear(1280, 512), nn.ReLU(), nn.Linear(512, 2))

    def forward(self, x):
        return self.mlp(torch.flatten(self.conv(x), 1))


class FaceKeypointNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 16, 5), nn.ReLU(),
            nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 32, 3), nn.ReLU(),
            nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 24, 3), nn.ReLU(),
            nn.Conv2d(24, 24, 3), nn.ReLU(), nn.MaxPool2d(2, 2),
        )
        self.mlp = nn.Sequential(nn.Linear(4224, 512), nn.ReLU(), nn.Linear(512, 116))

    def forward(self, x):
        return self.mlp(torch.flatten(self.conv(x), 1))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


class ResNet18(nn.Module):
    """torchvision's resnet18 layout with a 1-channel stem and 136 outputs."""

    def __init__(self, in_ch=1, out=136):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        chans = [64, 128, 256, 512]
        layers, cin = [], 64
        for i, c in enumerate(chans):
            s = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(cin, c, s), BasicBlock(c, c, 1)))
            cin = c
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, out)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class DpUnit(nn.Module):
    """kp's depthwise-separable unit: 1x1 conv, 3x3 depthwise, BN, ReLU (+ input when in == out)."""

    def __init__(self, cin, cout):
        super().__init__()
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.dw = nn.Conv2d(cout, cout, 3, padding=1, groups=cout, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.residual = cin == cout

    def forward(self, x):
        y = torch.relu(self.bn(self.dw(self.pw(x))))
        return y + x if self.residual else y


class CompactNet(nn.Module):
    """kp's compact landmark model (kp_models::CompactNet, default sizes), same names."""

    def __init__(self, k=68, size=128, stem=16, chans=(32, 64, 128, 256), units=(2, 2, 3, 2), head=32):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True)
        )
        self.pool = nn.MaxPool2d(2, 2)
        stages, lateral, cin = [], [], stem
        for c, n in zip(chans, units):
            stages.append(nn.Sequential(*[DpUnit(cin if u == 0 else c, c) for u in range(n)]))
            lateral.append(DpUnit(c, head))
            cin = c
        self.stages, self.lateral = nn.ModuleList(stages), nn.ModuleList(lateral)
        self.fuse = DpUnit(head, head)
        self.final_layer = nn.Conv2d(head, k, 1)
        cells = size // 4
        axis = (torch.arange(cells, dtype=torch.float32) + 0.5) * 4 / size - 0.5 / size
        self.register_buffer("axis", axis)

    def forward(self, x):
        y = self.stem(x)
        levels = []
        for stage, lat in zip(self.stages, self.lateral):
            y = stage(self.pool(y))
            levels.append(lat(y))
        top = levels.pop()
        while levels:
            top = levels.pop() + nn.functional.interpolate(top, scale_factor=2, mode="nearest")
        hm = self.final_layer(self.fuse(top))
        b, k, h, w = hm.shape
        p = torch.softmax(hm.reshape(b, k, h * w), -1).reshape(b, k, h, w)
        xs = (p.sum(2) * self.axis).sum(-1)
        ys = (p.sum(3) * self.axis).sum(-1)
        return torch.stack([xs, ys], -1).reshape(b, 2 * k)


MODELS = {
    "compact": (CompactNet, (128, 128), 136),
    # kp's ready model compact-wide: every width times 1.5, rounded to a multiple of 8.
    "compact-x1.5": (
        lambda: CompactNet(stem=24, chans=(48, 96, 192, 384), head=48),
        (128, 128),
        136,
    ),
    "nosetipnet": (NoseTipNet, (60, 80), 2),
    "facekeypointnet": (FaceKeypointNet, (120, 160), 116),
    "resnet18": (ResNet18, (224, 224), 136),
}


def time_case(model_name, batch, mode, iters, warmup, device):
    cls, (h, w), k = MODELS[model_name]
    torch.manual_seed(0)
    model = cls().to(device)
    x = torch.rand(batch, 1, h, w, device=device) - 0.5
    y = torch.rand(batch, k, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.MSELoss()
    times = []
    for i in range(warmup + iters):
        if device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        if mode == "train":
            model.train()
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
        else:
            model.eval()
            with torch.no_grad():
                model(x)
        if device != "cpu":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--cases", required=True, help="comma list of model:batch:mode:iters[:threads]"
    )
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument(
        "--tf32",
        choices=["default", "on", "off"],
        default="default",
        help="TF32 on CUDA: PyTorch's defaults (cuDNN convolutions yes, matmuls no), or both on/off",
    )
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.tf32 != "default":
        torch.backends.cudnn.allow_tf32 = a.tf32 == "on"
        torch.backends.cuda.matmul.allow_tf32 = a.tf32 == "on"
    for spec in a.cases.split(","):
        model, batch, mode, iters, *threads = spec.split(":")
        name = f"{model}_{mode}_b{batch}"
        if threads:
            n = int(threads[0])
            torch.set_num_threads(n)
            name += "_1thread" if n == 1 else f"_{n}threads"
        else:
            torch.set_num_threads(a.threads)
        ms = time_case(model, int(batch), mode, int(iters), a.warmup, a.device)
        print(json.dumps({"case": name, "ms": ms}), flush=True)


if __name__ == "__main__":
    main()
