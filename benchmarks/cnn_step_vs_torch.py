"""One training step (forward, loss, backward, SGD-momentum update) of normlab's deeper CNN ("bn-cnn")
against an identical PyTorch model (same layers, same weights) on the CPU, in images per second.

    python3 benchmarks/cnn_step_vs_torch.py [--batch 128] [--repeats 7] [--threads 2] [--normalization batch]
    python3 benchmarks/cnn_step_vs_torch.py --separate [--rounds 3] ...

The torch twin is built here from normlab's module tree and loaded with normlab's state dict; the script
first checks that the two compute the same logits. Target: normlab >= 0.7x torch's images per second.
Set OPENBLAS_NUM_THREADS (or OMP_NUM_THREADS) to --threads for NumPy's BLAS.

Two ways to time. By default the two sides alternate in one process (interleaved_medians), which cancels slow
drifts of a shared machine but lets the libraries' thread pools meet: torch's speed there was seen to swing
by up to 3x with the state of NumPy's OpenBLAS threads. `--separate` times each side alone, steps back to
back, in its own fresh process (`--only normlab|torch`), alternating processes for `--rounds` rounds, and
reports the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _versus_torch import blas_threads, import_torch

from normlab import functional as F
from normlab import nn
from normlab.models import build_model
from normlab.timing import interleaved_medians, median_seconds


def torch_twin(model: nn.Module, torch):
    """A torch.nn module computing what normlab's `model` computes, with the same state dict names."""
    tnn = torch.nn

    class ResidualBlock(tnn.Module):
        def __init__(self, conv1, bn1, conv2, bn2, shortcut):
            super().__init__()
            self.conv1, self.bn1, self.conv2, self.bn2, self.shortcut = conv1, bn1, conv2, bn2, shortcut

        def forward(self, x):
            hidden = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(hidden)) + (x if self.shortcut is None else self.shortcut(x)))

    def twin(m):
        if isinstance(m, nn.Sequential):
            return tnn.Sequential(*(twin(child) for child in m))
        if isinstance(m, nn.ResidualBlock):
            return ResidualBlock(twin(m.conv1), twin(m.bn1), twin(m.conv2), twin(m.bn2),
                                 None if m.shortcut is None else twin(m.shortcut))
        if isinstance(m, nn.Conv2d):
            return tnn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, groups=m.groups,
                              bias=m.bias is not None)
        if isinstance(m, nn.BatchNorm2d):
            return tnn.BatchNorm2d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
        if isinstance(m, nn.GroupNorm):
            return tnn.GroupNorm(m.num_groups, m.num_channels, m.eps, m.affine)
        if isinstance(m, nn.InstanceNorm2d):
            return tnn.InstanceNorm2d(m.num_features, m.eps, affine=m.affine)
        if isinstance(m, nn.Linear):
            return tnn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
        if isinstance(m, nn.MaxPool2d):
            return tnn.MaxPool2d(m.kernel_size, m.stride)
        if isinstance(m, nn.GlobalAvgPool2d):
            return tnn.Sequential(tnn.AdaptiveAvgPool2d(1), tnn.Flatten())
        return {nn.ReLU: tnn.ReLU, nn.Flatten: tnn.Flatten, nn.Identity: tnn.Identity}[type(m)]()

    twin_model = twin(model)
    twin_model.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return twin_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="torch threads; match NumPy's BLAS threads")
    parser.add_argument("--normalization", default="batch")
    parser.add_argument("--input-shape", type=int, nargs=3, default=(1, 28, 28), metavar=("C", "H", "W"))
    parser.add_argument("--separate", action="store_true", help="time each side alone in its own process")
    parser.add_argument("--rounds", type=int, default=3, help="with --separate: processes per side")
    parser.add_argument("--only", choices=("normlab", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.separate:
        run_separately(args)
        return
    torch = None if args.only == "normlab" else import_torch(args.threads)
    rng = np.random.default_rng(0)
    model = build_model("bn-cnn", input_shape=args.input_shape, num_classes=10, rng=rng,
                        normalization=args.normalization)
    x = rng.standard_normal((args.batch, *args.input_shape), dtype=np.float32)
    labels = rng.integers(0, 10, args.batch)
    if torch is not None:
        twin = torch_twin(model, torch)
        tx, tlabels = torch.from_numpy(x), torch.from_numpy(labels)
        if args.only is None:
            gap = np.abs(model.forward(x) - twin(tx).detach().numpy()).max()
            print(f"same model: largest |logit difference| {gap:.1e} on the first forward (float32)")

    lr, momentum = 0.01, 0.9
    velocity = {id(p): np.zeros_like(p.data) for p in model.parameters()}

    def ours():
        logits = model.forward(x)
        _, dlogits = F.softmax_cross_entropy(logits, labels)
        model.zero_grad()
        with nn.input_grad_skipped(model):  # as torch, whose input does not require grad
            model.backward(dlogits)
        for p in model.parameters():
            v = velocity[id(p)]
            v *= momentum
            v += p.grad
            p.data -= lr * v

    if args.only == "normlab":
        print(json.dumps({"seconds": median_seconds(ours, args.repeats, warmup=2)}))
        return
    optimizer = torch.optim.SGD(twin.parameters(), lr=lr, momentum=momentum)

    def theirs():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(twin(tx), tlabels).backward()
        optimizer.step()

    if args.only == "torch":
        print(json.dumps({"seconds": median_seconds(theirs, args.repeats, warmup=2)}))
        return
    ours_s, theirs_s = interleaved_medians({"normlab": ours, "torch": theirs}, args.repeats).values()
    print(f"torch threads {torch.get_num_threads()}, NumPy BLAS threads: {blas_threads()}, float32, "
          f"batch {args.batch}, input {tuple(args.input_shape)}, normalization {args.normalization!r}, "
          f"median of {args.repeats}")
    print(f"{'':<10} {'step ms':>9} {'images/s':>10} {'CPU ms':>9}")
    for name, timing in (("normlab", ours_s), ("torch", theirs_s)):
        print(f"{name:<10} {timing.wall * 1e3:>9.1f} {args.batch / timing.wall:>10.0f} {timing.cpu * 1e3:>9.1f}")
    print(f"normlab / torch images per second: {theirs_s.wall / ours_s.wall:.2f}x wall clock, "
          f"{theirs_s.cpu / ours_s.cpu:.2f}x by CPU time (target >= 0.7x)")


def run_separately(args) -> None:
    """Each side alone in fresh processes, alternating, `args.rounds` each; print the medians."""
    command = [sys.executable, __file__, "--batch", str(args.batch), "--repeats", str(args.repeats),
               "--threads", str(args.threads), "--normalization", args.normalization,
               "--input-shape", *map(str, args.input_shape)]
    seconds = {"normlab": [], "torch": []}
    for _ in range(args.rounds):
        for side, times in seconds.items():
            done = subprocess.run([*command, "--only", side], capture_output=True, text=True, check=True)
            times.append(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])
    ours, theirs = (statistics.median(seconds[side]) for side in ("normlab", "torch"))
    print(f"each side alone in its own process, {args.rounds} processes each, median of {args.repeats} steps back "
          f"to back; torch threads {args.threads}, NumPy BLAS threads: {blas_threads()}, batch {args.batch}")
    for side, times in seconds.items():
        print(f"{side:<10} step ms per process: {', '.join(f'{t * 1e3:.1f}' for t in times)}")
    print(f"normlab / torch images per second: {theirs / ours:.2f}x (medians {ours * 1e3:.1f} and "
          f"{theirs * 1e3:.1f} ms; target >= 0.7x)")


if __name__ == "__main__":
    main()
