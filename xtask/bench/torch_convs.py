"""Times ResNet18's convolution shapes (batch 16, 224x224, one input channel) in PyTorch:
forward, and forward + backward; the counterpart of kp-ops' `resnet18_convs` example.

    python xtask/bench/torch_convs.py [ROUNDS]
"""
import sys
import time

import torch
import torch.nn.functional as F

LAYERS = [
    ("conv1", 1, 64, 224, 7, 2, 3, 1),
    ("l1", 64, 64, 56, 3, 1, 1, 4),
    ("l2a", 64, 128, 56, 3, 2, 1, 1),
    ("l2ds", 64, 128, 56, 1, 2, 0, 1),
    ("l2", 128, 128, 28, 3, 1, 1, 3),
    ("l3a", 128, 256, 28, 3, 2, 1, 1),
    ("l3ds", 128, 256, 28, 1, 2, 0, 1),
    ("l3", 256, 256, 14, 3, 1, 1, 3),
    ("l4a", 256, 512, 14, 3, 2, 1, 1),
    ("l4ds", 256, 512, 14, 1, 2, 0, 1),
    ("l4", 512, 512, 7, 3, 1, 1, 3),
]


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    n = 16
    print("layer,count,fwd_ms,fwd_bwd_ms")
    tf = tb = 0.0
    for name, cin, cout, h, k, s, p, count in LAYERS:
        x = torch.randn(n, cin, h, h, requires_grad=name != "conv1")
        w = (torch.randn(cout, cin, k, k) * 0.05).requires_grad_()
        fwd, both = [], []
        for r in range(rounds + 2):
            t0 = time.perf_counter()
            y = F.conv2d(x, w, None, s, p)
            t1 = time.perf_counter()
            y.backward(torch.ones_like(y))
            t2 = time.perf_counter()
            w.grad = None
            if x.requires_grad:
                x.grad = None
            if r >= 2:
                fwd.append((t1 - t0) * 1e3)
                both.append((t2 - t0) * 1e3)
        f, b = sorted(fwd)[len(fwd) // 2], sorted(both)[len(both) // 2]
        tf += f * count
        tb += b * count
        print(f"{name},{count},{f:.2f},{b:.2f}")
    print(f"total,,{tf:.1f},{tb:.1f}")


if __name__ == "__main__":
    main()
