"""Training throughput of one model in the three frameworks `normlab train --framework` offers: normlab's
NumPy step, and the steps of its torch and Keras/TensorFlow twins (the objects the trainer uses:
`normlab.train.frameworks`), in images per second, as ratios from one run.

    python3 benchmarks/framework_throughput.py [--model bn-cnn] [--batch 128] [--repeats 7] [--threads 2]

Same model (built by normlab, converted with to_torch / to_keras), same batch (28x28x1, standardized
noise), SGD with momentum 0.9. The threads are the same in all three: NumPy's BLAS (set here through
OPENBLAS_NUM_THREADS / OMP_NUM_THREADS before NumPy loads, unless already set), torch's intra-op
threads, and TensorFlow's intra-op threads (inter-op 1). Each repetition times one step of each
framework in turn, so the three share the same machine noise; medians of `repeats`.
"""

from __future__ import annotations

import argparse
import os
import sys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bn-cnn")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import numpy as np
    import tensorflow as tf
    import torch

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    torch.set_num_threads(args.threads)

    from normlab.models import build_model
    from normlab.timing import interleaved_medians
    from normlab.train.config import TrainConfig
    from normlab.train.frameworks import KerasSteps, TorchSteps
    from normlab.train.run import build_optimizer
    from normlab.train.trainer import Trainer

    shape = (1, 28, 28)
    config = TrainConfig(model=args.model, optimizer="sgd", lr=0.01, momentum=0.9, batch_size=args.batch)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, *shape), dtype=np.float32)  # (B, 1, 28, 28)
    y = rng.integers(0, 10, args.batch)

    def model():
        return build_model(args.model, input_shape=shape, num_classes=10, rng=np.random.default_rng(1))

    numpy_model = model()
    trainer = Trainer(numpy_model, build_optimizer(config, numpy_model), x, y, x[:0], y[:0], epochs=1,
                      batch_size=args.batch, rng=np.random.default_rng(2), progress=False)
    torch_steps = TorchSteps(model(), config)
    keras_steps = KerasSteps(model(), config, shape)
    steps = {"numpy": lambda: trainer.train_step(x, y), "torch": lambda: torch_steps.train_step(x, y),
             "tensorflow": lambda: keras_steps.train_step(x, y)}
    losses: dict[str, float] = {}

    def recorded(name, step):
        return lambda: losses.__setitem__(name, step())

    # One warm-up step each (TensorFlow traces its graph there), then turns after a pause each.
    timings = interleaved_medians({name: recorded(name, step) for name, step in steps.items()}, args.repeats)
    medians = {name: t.wall for name, t in timings.items()}
    cores = {name: t.cpu / t.wall for name, t in timings.items()}  # CPU time over wall time: threads really used

    print(f"{args.model} on {shape}, batch {args.batch}, SGD momentum, float32, threads {args.threads} "
          f"(BLAS {os.environ['OPENBLAS_NUM_THREADS']}, torch {torch.get_num_threads()}, TensorFlow intra-op "
          f"{args.threads}), median of {args.repeats}; losses after {args.repeats + 1} steps "
          + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()))
    print(f"{'framework':<11} {'step ms':>9} {'images/s':>10} {'vs numpy':>9} {'cores busy':>11}")
    for name, seconds in medians.items():
        print(f"{name:<11} {seconds * 1e3:>9.1f} {args.batch / seconds:>10.0f} {medians['numpy'] / seconds:>8.2f}x "
              f"{cores[name]:>11.1f}")


if __name__ == "__main__":
    sys.exit(main())
