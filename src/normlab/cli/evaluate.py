"""`normlab evaluate RUN`: a trained run's model on its dataset's test set: the accuracy, a table of
accuracy per class, and a confusion-matrix PNG (RUN/confusion.png, or --plot FILE)."""

from __future__ import annotations

from pathlib import Path

from normlab.cli._run_args import USER_ERRORS, add_data_arguments, add_run_argument, fail

HELP = "test accuracy, accuracy per class and a confusion matrix of a trained run"
CONFUSION = "confusion.png"  # = normlab.train.run.CONFUSION (kept here: the CLI imports no training code)


def add_arguments(parser) -> None:
    add_run_argument(parser)
    add_data_arguments(parser)
    parser.add_argument("--plot", metavar="FILE", help=f"where to write the confusion matrix (default RUN/{CONFUSION})")


def run(args) -> int:
    from normlab.data import load_dataset
    from normlab.train import load_run
    from normlab.train.evaluation import evaluate_predictions
    from normlab.train.plots import plot_confusion

    try:
        trained = load_run(args.run, weights=args.weights, data_dir=args.data_dir, download=not args.no_download)
        dataset = load_dataset(trained.config.dataset, args.data_dir, download=not args.no_download)
        result = evaluate_predictions(dataset.y_test, trained.predict(dataset.x_test), trained.classes)
    except USER_ERRORS as error:
        return fail("evaluate", error)
    plot = Path(args.plot) if args.plot else Path(args.run) / CONFUSION
    config = trained.config
    plot_confusion(result.confusion, result.classes, plot,
                   title=f"{config.model} on {config.dataset} test set: accuracy {result.accuracy:.4f}")
    print(f"{config.model} on the {config.dataset} test set ({len(dataset.y_test)} examples), weights of "
          f"epoch {trained.weights.get('epoch')} ({Path(trained.weights['file']).name})")
    print(result.table())
    print(f"test accuracy {result.accuracy:.4f}; confusion matrix in {plot}")
    return 0
