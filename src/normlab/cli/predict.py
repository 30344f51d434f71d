"""`normlab predict RUN FILE...`: the class a trained run's model gives each image, with its probability.

A FILE is a .png picture or a .npy array holding one image or a batch, uint8 (0..255) or float in [0, 1],
(C, H, W), (H, W, C) or (H, W) for one channel, of the size the model was trained on (see
`normlab.data.images`); a .npy batch prints one line per image, FILE[i].
"""

from __future__ import annotations

from normlab.cli._run_args import USER_ERRORS, add_data_arguments, add_run_argument, fail, number

HELP = "classify images (.npy or .png files) with a trained run's model"


def add_arguments(parser) -> None:
    add_run_argument(parser)
    parser.add_argument("files", nargs="+", metavar="FILE", help="images: .png, or .npy (one image or a batch)")
    parser.add_argument("--top", type=number(int, low=1), default=1, metavar="K",
                        help="print the K likeliest classes (default 1)")
    add_data_arguments(parser)  # only a run without preprocessing.json needs its dataset


def run(args) -> int:
    import numpy as np

    from normlab.data.images import read_images
    from normlab.train import load_run

    try:
        trained = load_run(args.run, weights=args.weights, data_dir=args.data_dir, download=not args.no_download)
        batches = [read_images(path, trained.input_shape) for path in args.files]  # every file checked first
    except USER_ERRORS as error:
        return fail("predict", error)
    for path, (images, batched) in zip(args.files, batches):
        probabilities = trained.predict_proba(images)  # (N, K)
        for i, p in enumerate(probabilities):
            label = f"{path}[{i}]" if batched else path
            best = np.argsort(-p, kind="stable")[:args.top]
            print(f"{label}: " + ", ".join(f"{trained.classes[k]} {p[k]:.4f}" for k in best))
    return 0

