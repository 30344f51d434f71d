"""Train normlab's deeper CNN ("bn-cnn") on Fashion-MNIST and report the test accuracy after every epoch,
the first epoch at which it reaches the target (92.5%) and the wall time to get there.

    python3 benchmarks/cnn_fashion_mnist.py [--epochs 10] [--batch 128] [--lr 0.1]

Self-contained on purpose: it reads the IDX files itself and runs a small training loop (shuffled
minibatches, random 2-pixel-shift crops and horizontal flips, SGD with momentum and weight decay, a
one-cycle learning rate), so it works before normlab's Trainer and data module exist; once they do it can
call them instead. The hyperparameters are fixed in advance, not tuned on the test set.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from normlab import functional as F
from normlab import nn
from normlab.models import build_model

DATA_DIR = "/usr/share/datasets/fashion-mnist"
TARGET = 0.925


def read_idx(path: str) -> np.ndarray:
    """An IDX file (gzip): a big-endian header of dimension sizes, then uint8 data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(data_dir: str):
    def images(name):
        return read_idx(os.path.join(data_dir, f"{name}-images-idx3-ubyte.gz"))[:, None].astype(np.float32) / 255

    def labels(name):
        return read_idx(os.path.join(data_dir, f"{name}-labels-idx1-ubyte.gz")).astype(np.int64)

    x_train, x_test = images("train"), images("t10k")
    mean, std = x_train.mean(), x_train.std()  # training statistics only
    return (x_train - mean) / std, labels("train"), (x_test - mean) / std, labels("t10k"), float(-mean / std)


def augment(x: np.ndarray, rng: np.random.Generator, background: float, pad: int = 2) -> np.ndarray:
    """Random crops of the image padded by `pad` pixels of background, and random horizontal flips.
    x: (N, C, H, W) -> (N, C, H, W)."""
    n, c, h, w = x.shape
    padded = np.full((n, c, h + 2 * pad, w + 2 * pad), background, dtype=x.dtype)
    padded[:, :, pad:pad + h, pad:pad + w] = x
    windows = sliding_window_view(padded, (h, w), axis=(2, 3))  # (N, C, 2pad+1, 2pad+1, H, W)
    dy, dx = rng.integers(0, 2 * pad + 1, n), rng.integers(0, 2 * pad + 1, n)
    out = windows[np.arange(n), :, dy, dx]  # (N, C, H, W)
    flip = rng.random(n) < 0.5
    out[flip] = out[flip, :, :, ::-1]
    return out


def accuracy(model, x: np.ndarray, y: np.ndarray, batch: int = 500) -> float:
    model.eval()
    correct = sum(int((model.forward(x[i:i + batch]).argmax(axis=1) == y[i:i + batch]).sum())
                  for i in range(0, len(x), batch))
    model.train()
    return correct / len(x)


def one_cycle(step: int, total: int, peak: float, warmup: float = 0.15) -> float:
    """Linear warm-up to `peak` over the first `warmup` of training, then linear decay to 0."""
    rise = max(1, int(total * warmup))
    return peak * step / rise if step < rise else peak * (total - step) / (total - rise)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1, help="peak learning rate")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=5e-4, help="on convolution and linear weights")
    parser.add_argument("--normalization", default="batch")
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--train-limit", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=DATA_DIR)
    parser.add_argument("--json", help="also write the per-epoch history here")
    args = parser.parse_args()
    if not os.path.exists(os.path.join(args.data_dir, "train-images-idx3-ubyte.gz")):
        sys.exit(f"Fashion-MNIST not found in {args.data_dir} (apt-get install dataset-fashion-mnist)")

    rng = np.random.default_rng(args.seed)
    x_train, y_train, x_test, y_test, background = load(args.data_dir)
    if args.train_limit:
        x_train, y_train = x_train[:args.train_limit], y_train[:args.train_limit]
    model = build_model("bn-cnn", input_shape=x_train.shape[1:], num_classes=10, rng=rng,
                        normalization=args.normalization)
    params = model.parameters()
    decayed = {id(p) for p in params if p.data.ndim > 1}  # weights, not biases or normalization affines
    velocity = [np.zeros_like(p.data) for p in params]
    steps_per_epoch = -(-len(x_train) // args.batch)
    total_steps = args.epochs * steps_per_epoch
    print(f"bn-cnn ({sum(p.data.size for p in params):,} parameters, normalization {args.normalization!r}), "
          f"{len(x_train):,} training images, batch {args.batch}, {args.epochs} epochs, "
          f"augmentation {'off' if args.no_augment else 'on'}, BLAS threads {os.environ.get('OPENBLAS_NUM_THREADS', 'default')}")
    print(f"{'epoch':>5} {'lr':>7} {'train loss':>10} {'train acc':>9} {'test acc':>8} {'epoch s':>8} {'total s':>8}")
    history, reached, start, step = [], None, time.perf_counter(), 0
    for epoch in range(1, args.epochs + 1):
        epoch_start, losses, correct = time.perf_counter(), [], 0
        for batch in np.array_split(rng.permutation(len(x_train)), steps_per_epoch):
            x, y = x_train[batch], y_train[batch]
            if not args.no_augment:
                x = augment(x, rng, background)
            lr = one_cycle(step, total_steps, args.lr)
            scores = model.forward(x)
            loss, dscores = F.softmax_cross_entropy(scores, y)
            model.zero_grad()
            with nn.input_grad_skipped(model):  # the images need no gradient
                model.backward(dscores)
            for p, v in zip(params, velocity):
                v *= args.momentum
                v += p.grad
                if id(p) in decayed:
                    v += args.weight_decay * p.data
                p.data -= lr * v
            losses.append(loss)
            correct += int((scores.argmax(axis=1) == y).sum())
            step += 1
        test_acc = accuracy(model, x_test, y_test)
        now = time.perf_counter()
        row = {"epoch": epoch, "lr": lr, "train_loss": float(np.mean(losses)), "train_acc": correct / len(x_train),
               "test_acc": test_acc, "epoch_seconds": now - epoch_start, "total_seconds": now - start}
        history.append(row)
        print(f"{epoch:>5} {lr:>7.4f} {row['train_loss']:>10.4f} {row['train_acc']:>9.4f} {test_acc:>8.4f} "
              f"{row['epoch_seconds']:>8.1f} {row['total_seconds']:>8.1f}", flush=True)
        if reached is None and test_acc >= TARGET:
            reached = row
    if reached:
        print(f"reached {TARGET:.1%} test accuracy at epoch {reached['epoch']} after {reached['total_seconds']:.0f} s "
              f"(final {history[-1]['test_acc']:.2%} after {history[-1]['total_seconds']:.0f} s)")
    else:
        print(f"did not reach {TARGET:.1%}: best {max(r['test_acc'] for r in history):.2%}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "history": history}, f, indent=1)


if __name__ == "__main__":
    main()
