"""`normlab export RUN --format onnx|torch|keras [--fold] [--out FILE]`: a trained run's model as a file
for onnxruntime, PyTorch or Keras (`normlab.interop.export`), then checked: the file is loaded back by its
own runtime and its scores on real test images are compared with normlab's."""

from __future__ import annotations

import sys
from pathlib import Path

from normlab.cli._run_args import USER_ERRORS, add_data_arguments, add_run_argument, fail, number

HELP = "export a trained run's model to ONNX, PyTorch (torch.export) or Keras, checked against normlab"
RUNTIMES = {"onnx": "onnxruntime", "torch": "torch.export.load", "keras": "keras.saving.load_model"}  # what loads each


def add_arguments(parser) -> None:
    add_run_argument(parser)
    parser.add_argument("--format", required=True, choices=RUNTIMES,
                        help="onnx (.onnx, through the torch twin), torch (.pt2, torch.export) or keras (.keras)")
    parser.add_argument("--fold", action="store_true",
                        help="merge evaluation-mode batch norms into the layer before them first")
    parser.add_argument("--out", metavar="FILE", help="where to write (default RUN/model[.folded].onnx|.pt2|.keras)")
    parser.add_argument("--check", type=number(int, low=0), default=256, metavar="N",
                        help="compare with normlab on the first N test images (default 256; 0: no check)")
    parser.add_argument("--tolerance", type=number(float, low=0), default=1e-4,
                        help="largest difference of scores that passes, relative to the largest score (default 1e-4)")
    add_data_arguments(parser)


def run(args) -> int:
    import numpy as np

    from normlab.interop.export import FORMATS, export_model, run_exported
    from normlab.train import load_run

    out = Path(args.out or Path(args.run) / f"model{'.folded' if args.fold else ''}{FORMATS[args.format]}")
    try:
        trained = load_run(args.run, weights=args.weights, data_dir=args.data_dir, download=not args.no_download)
        metadata = {"classes": list(trained.classes), "input_shape": list(trained.input_shape),
                    "input": "standardized images (N, C, H, W): (pixels / 255 - mean) / std per channel",
                    "standardizer_mean": trained.standardizer.mean.tolist(),
                    "standardizer_std": trained.standardizer.std.tolist(),
                    "model": trained.config.model, "dataset": trained.config.dataset, "folded": args.fold}
        export_model(trained.model, trained.input_shape, args.format, out, fold=args.fold, metadata=metadata)
    except USER_ERRORS as error:
        return fail("export", error)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.2f} MiB; {args.format}"
          f"{', batch norms folded' if args.fold else ''}; inputs: standardized images (N, "
          f"{', '.join(map(str, trained.input_shape))}){', channels-last' if args.format == 'keras' else ''})")
    if args.check == 0:
        return 0
    x, source = _check_inputs(trained, args, np)
    expected = trained.scores(x)
    got = run_exported(out, args.format, x)
    diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
    scale = float(np.max(np.abs(expected)))
    agree = int(np.sum(got.argmax(axis=1) == expected.argmax(axis=1)))
    print(f"checked with {RUNTIMES[args.format]} on {len(x)} {source}: max |scores - normlab's| = {diff:.2e} "
          f"(largest score {scale:.2f}); the same class for {agree}/{len(x)}")
    if not diff <= args.tolerance * max(1.0, scale):
        print(f"normlab export: error: the exported model differs from normlab's by {diff:.2e}, more than "
              f"--tolerance {args.tolerance:g} x {max(1.0, scale):.2f}", file=sys.stderr)
        return 1
    return 0


def _check_inputs(trained, args, np):
    """The first --check test images, standardized; standard-normal inputs when the dataset is not found."""
    from normlab.data import DatasetNotFoundError, load_dataset

    try:
        dataset = load_dataset(trained.config.dataset, args.data_dir, download=not args.no_download)
        return trained.preprocess(dataset.x_test[:args.check]), f"{trained.config.dataset} test images"
    except DatasetNotFoundError as error:
        print(f"note: {error.__class__.__name__}: {str(error).splitlines()[0]}; checking on random inputs instead")
        x = np.random.default_rng(0).standard_normal((args.check, *trained.input_shape)).astype(np.float32)
        return x, "standard-normal inputs"
