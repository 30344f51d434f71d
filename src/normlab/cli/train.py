"""`normlab train`: train a network on an image dataset and write a run directory.

With no arguments: a batch-normalized FullyConnectedNet (512, 256) on Fashion-MNIST, Adam, 5 epochs.
This module turns arguments into a `TrainConfig`; `normlab.train.run.run_training` executes it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from normlab.cli._run_args import add_data_arguments, fail, number

HELP = "train a network on Fashion-MNIST, MNIST or CIFAR-10 and write a run directory"

# One flag per option of normlab.nn.norm_registry (a test holds every option that a command line can give
# covered), with the range argparse checks and its metavar; the registry gives its type, default and meaning.
TRAIN_NORM_FLAGS = {
    "groups": ("--groups", {"low": 1}, "G"),
    "virtual_batch_size": ("--virtual-batch-size", {"low": 1}, "N"),
    "rmax": ("--rmax", {"low": 1}, "R"),
    "dmax": ("--dmax", {"low": 0}, "D"),
    "warmup_steps": ("--renorm-warmup", {"low": 0}, "STEPS"),
    "rmax_full_at": ("--rmax-full-at", {"low": 0}, "STEP"),
    "dmax_full_at": ("--dmax-full-at", {"low": 0}, "STEP"),
    "momentum": ("--norm-momentum", {"low": 0, "low_open": True, "high": 1}, "M"),
    "eps": ("--norm-eps", {"low": 0, "low_open": True}, "EPS"),
}
# What --resume may be given (and argparse's command): every other option changes the result, which the run's
# config.json decides, or its directory (--out, --overwrite).
RESUME_TAKES = ("command", "resume", "data_dir", "no_download", "distributed", "sync_bn", "progress", "tensorboard")


def _weight_scale(text: str):
    if text == "he":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'he' or a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected 'he' or a finite number > 0, got {text!r}")
    return value


def add_arguments(parser) -> None:
    from normlab.data import available_datasets
    from normlab.models import available_models
    from normlab.nn.norm_registry import PLACEMENTS, get_normalization, normalization_names
    from normlab.train.config import DEFAULT_LR, SCHEDULES, TrainConfig

    d = TrainConfig()
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=available_datasets(), help=f"dataset (default {d.dataset})")
    add_data_arguments(data)
    data.add_argument("--limit", type=number(int, low=2), metavar="N",
                      help="use only the first N training examples (quick runs)")
    data.add_argument("--val-size", type=number(int, low=0), metavar="N",
                      help="training examples held out for validation (default: 5000 or a tenth of the "
                           "training set, whichever is fewer)")
    data.add_argument("--augment", action=argparse.BooleanOptionalAction,
                      help="random crops and horizontal flips (default: if the model asks for them)")

    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=available_models(), help=f"model (default {d.model})")
    model.add_argument("--hidden", type=number(int, low=1), nargs="*", metavar="D",
                       help="hidden layer sizes (fcnet: 512 256)")
    model.add_argument("--normalization", choices=normalization_names(),
                       help="normalization of each hidden layer (default: the model's, batch for fcnet and "
                            "bn-cnn); instance needs a convolutional model")
    model.add_argument("--placement", choices=PLACEMENTS,
                       help="fcnet: the normalization before the nonlinearity (the batch norm paper's, the "
                            "default) or after it")
    for option, (flag, bounds, metavar) in TRAIN_NORM_FLAGS.items():  # help: "batch, renorm: ... (0.1; renorm 0.01)"
        takers = {n: o for n in normalization_names() for o in get_normalization(n).options if o.name == option}
        first, *_ = takers.values()
        other = [f"{n} {o.default:g}" for n, o in takers.items() if o.default != first.default]
        defaults = "" if first.default is None else f" ({'; '.join([f'{first.default:g}', *other])})"
        text = f"{', '.join(takers)}: {first.help}{defaults}"
        model.add_argument(flag, type=number(first.type, **bounds), metavar=metavar, help=text)
    model.add_argument("--dropout", type=number(float, low=0, high=1, high_open=True), metavar="P",
                       help="probability of dropping an activation (0)")
    model.add_argument("--weight-scale", type=_weight_scale, metavar="he|S",
                       help="initialization: He, or N(0, S^2) as CS231n (he)")

    opt = parser.add_argument_group("optimization")
    opt.add_argument("--optimizer", choices=sorted(DEFAULT_LR), help=f"optimizer (default {d.optimizer})")
    opt.add_argument("--lr", type=number(float, low=0, low_open=True), help="learning rate (default: " +
                     ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")")
    opt.add_argument("--momentum", type=number(float, low=0, high=1, high_open=True),
                     help=f"SGD momentum (default {d.momentum})")
    opt.add_argument("--nesterov", action="store_true", default=None, help="SGD with Nesterov momentum")
    opt.add_argument("--weight-decay", type=number(float, low=0), metavar="WD",
                     help="L2 strength on the weights, never on gamma, beta or biases: the model's "
                          "0.5 * WD * ||W||^2 penalty, or AdamW's decoupled decay (default 0; adamw 0.01)")
    opt.add_argument("--schedule", choices=SCHEDULES, help=f"learning-rate schedule (default {d.schedule})")
    opt.add_argument("--warmup", type=number(float, low=0), metavar="EPOCHS",
                     help="linear warm-up, in epochs (default 0)")
    opt.add_argument("--step-epochs", type=number(int, low=1), metavar="K",
                     help=f"step schedule: decay every K epochs (default {d.step_epochs})")
    opt.add_argument("--step-gamma", type=number(float, low=0, low_open=True),
                     help=f"step schedule: decay factor (default {d.step_gamma})")
    opt.add_argument("--epochs", type=number(int, low=1), help=f"epochs (default {d.epochs})")
    opt.add_argument("--batch-size", type=number(int, low=1), help=f"minibatch size (default {d.batch_size})")
    opt.add_argument("--precise-bn", type=number(int, low=0), metavar="K",
                     help="after training, recompute every batch norm's running statistics exactly from K training "
                          "batches (Wu & Johnson 2021's precise BN), before the test evaluation (default 0: keep the "
                          "running averages)")
    opt.add_argument("--seed", type=number(int, low=0),
                     help=f"seed of the split, the initialization and the order (default {d.seed})")

    run = parser.add_argument_group("run")
    run.add_argument("--framework", choices=("numpy", "torch", "tensorflow"),
                     help="train normlab's model (numpy, the default) or its twin in torch or tensorflow: same data, "
                          "initial weights, hyperparameters and run files")
    run.add_argument("--out", metavar="DIR", help="run directory (default runs/<date-time>); refused if it holds "
                                                   "a run, unless --overwrite")
    run.add_argument("--overwrite", action="store_true", default=None, help="with --out: replace the run already there")
    run.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint, with "
                                                      "its saved configuration")
    dist = parser.add_argument_group("data parallel (docs/distributed.md)")
    dist.add_argument("--distributed", action="store_true",
                      help="train data-parallel on the processes of `mpiexec -n P normlab train --distributed`; "
                           "--batch-size is the global batch. Without mpiexec: one process, as without the flag")
    dist.add_argument("--sync-bn", action=argparse.BooleanOptionalAction,
                      help="with --distributed: batch norm statistics over the global batch (default: on; "
                           "when resuming, as the run was started)")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                     help="progress bar (default: on)")
    run.add_argument("--tensorboard", action="store_true",
                     help="also write TensorBoard event files into RUN/tensorboard (needs normlab[tensorboard])")


def config_from_args(args):
    """A TrainConfig from the command line. Raises ValueError naming an option the model does not take."""
    from dataclasses import fields

    from normlab.train.config import DEFAULT_LR, TrainConfig, default_augment, model_options, takes_option

    model = args.model or TrainConfig.model
    optimizer = args.optimizer or TrainConfig.optimizer
    weight_decay = args.weight_decay if args.weight_decay is not None else (1e-2 if optimizer == "adamw" else 0.0)
    given = {"hidden_dims": tuple(args.hidden) if args.hidden is not None else None,
             "normalization": args.normalization, "norm_options": _norm_options(args, model),
             "placement": args.placement, "dropout": args.dropout, "weight_scale": args.weight_scale}
    # Plain L2 goes into the model's loss when the model has one (CS231n's reg); AdamW's decay is the
    # optimizer's own, and so is the L2 of a model without a `reg` option.
    in_model = optimizer != "adamw" and weight_decay > 0 and takes_option(model, "reg")
    if in_model:
        given["reg"] = weight_decay
    # The other options set the TrainConfig field of their name (--warmup: warmup_epochs); None: its default.
    settings = {f.name: getattr(args, f.name, None) for f in fields(TrainConfig)}
    settings.update(model=model, model_options=model_options(model, given), optimizer=optimizer,
                    lr=args.lr if args.lr is not None else DEFAULT_LR[optimizer], warmup_epochs=args.warmup,
                    weight_decay=0.0 if in_model else weight_decay,
                    augment=args.augment if args.augment is not None else default_augment(model))
    return TrainConfig(**{k: v for k, v in settings.items() if v is not None})


def _norm_options(args, model: str) -> dict | None:
    """The norm_options the flags give for --normalization, or the model's default one; None when no flag is
    given. Raises ValueError naming a flag the normalization does not take, or a model without one."""
    from normlab.nn.norm_registry import check_norm_options, get_normalization
    from normlab.train.config import builder_default

    flags = {option: flag for option, (flag, *_) in TRAIN_NORM_FLAGS.items()}
    values = {option: getattr(args, flag[2:].replace("-", "_")) for option, flag in flags.items()}
    given = {option: value for option, value in values.items() if value is not None}
    if not given:
        return None
    normalization = args.normalization or builder_default(model, "normalization")
    if normalization is None:
        raise ValueError(f"{' '.join(flags[o] for o in given)}: model {model!r} has no normalization to take it")
    takes = get_normalization(normalization).defaults
    wrong = [flags[o] for o in given if o not in takes]
    if wrong:
        accepted = [flags[o] for o in takes if o in flags]
        chosen = f"--normalization {normalization}" + ("" if args.normalization else f" (model {model!r}'s default)")
        raise ValueError(f"{' '.join(wrong)}: not an option of {chosen} (it takes {', '.join(accepted) or 'none'})")
    try:
        check_norm_options(normalization, given)
    except ValueError as e:  # say it with the flags the user typed (rmax_full_at -> --rmax-full-at)
        message = str(e)
        for option, flag in flags.items():
            message = re.sub(rf"\b{option}\b", flag, message)
        raise ValueError(message) from None
    return given


def run(args) -> int:
    from normlab.distributed import abort_on_error, world

    comm = world()
    if comm.size > 1 and not args.distributed:
        if not comm.is_root:
            return 2
        return fail("train", f"started as one of {comm.size} processes (mpiexec) without --distributed: each would "
                    "train alone and write the same run directory; add --distributed")
    if args.sync_bn is not None and not args.distributed:
        return fail("train", "--sync-bn/--no-sync-bn needs --distributed")
    if not args.distributed:
        return _train(args, None)
    with abort_on_error(comm):
        code = _train(args, comm)
        if code not in (0, 130) and comm.size > 1:
            # An error seen by some ranks only (a missing data set on one machine) would leave the others
            # waiting in their next collective: end them all.
            raise SystemExit(code)
    return code


def _saved_sync_batchnorm(path: Path) -> bool:
    """The batch norm kind a data-parallel run was started with, from its distributed.json."""
    try:
        value = json.loads(path.read_text())["sync_batchnorm"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: damaged: expected a JSON object with a true/false \"sync_batchnorm\" "
                         f"({type(e).__name__}: {e})") from None
    if not isinstance(value, bool):
        raise ValueError(  # noqa: TRY004 (a damaged file: the callers report ValueError)
            f"{path}: damaged: \"sync_batchnorm\" must be true or false, got {value!r}")
    return value


def _train(args, comm) -> int:
    """Train (on the processes of `comm`, or alone when None); the exit status. Only rank 0 prints."""
    from normlab.train.config import TrainConfig
    from normlab.train.run import CONFIG, CURVES, DISTRIBUTED, RunDirectoryError, check_run_directory, run_training

    started = time.perf_counter()
    root = comm is None or comm.is_root
    try:
        if args.resume:
            given = [f"--{dest.replace('_', '-')}" for dest, value in vars(args).items()
                     if value is not None and dest not in RESUME_TAKES]
            if given:
                raise ValueError(f"--resume continues a run with its saved configuration; do not combine it with "
                                 f"{' '.join(given)}")
            run_dir = Path(args.resume)
            if run_dir.exists() and not run_dir.is_dir():
                raise ValueError(f"--resume {run_dir}: is a file, not a run directory")
            if not (run_dir / CONFIG).is_file():
                raise ValueError(f"--resume {run_dir}: no {CONFIG} there, so it is not a run directory")
            config = TrainConfig.load(run_dir / CONFIG)
        else:
            config = config_from_args(args)
            run_dir = Path(args.out) if args.out else _new_run_directory(comm)
        if root:
            try:  # before the data are loaded: a wrong directory fails at once
                check_run_directory(run_dir, resume=bool(args.resume), overwrite=args.overwrite)
            except RunDirectoryError as e:
                option = "--resume" if args.resume else "--out" if args.out else "run directory"
                raise ValueError(f"{option} {e}") from None
        sync_batchnorm = args.sync_bn
        if sync_batchnorm is None:  # as the resumed run was started, else on
            saved = run_dir / DISTRIBUTED
            sync_batchnorm = _saved_sync_batchnorm(saved) if args.resume and saved.is_file() else True
        if args.resume:  # after every metadata file is read, so a damaged one is named first
            complete = _completed_note(run_dir, config) if root else None
            complete = comm.broadcast_object(complete) if comm is not None else complete
            if complete:
                if root:
                    print(complete)
                return 0
        result = run_training(config, run_dir, resume=bool(args.resume), data_dir=args.data_dir,
                              download=not args.no_download, progress=args.progress, comm=comm,
                              sync_batchnorm=sync_batchnorm, tensorboard=args.tensorboard,
                              overwrite=args.overwrite)
    except (ValueError, ImportError, OSError) as e:  # the data's errors are ValueErrors and FileNotFoundErrors
        where = "" if root else f" (rank {comm.rank})"  # an error only some ranks see must be shown too
        text = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.filename and e.strerror else str(e)
        print(f"normlab train: error{where}: {text}", file=sys.stderr)
        return 2
    if not root:
        return 0 if result.ok else (130 if result.status == "interrupted" else 1)
    if result.status == "completed":
        best = result.history.best_epoch()
        chosen = f"epoch {best.epoch}, val acc {best.val_acc:.4f}" if best else "last epoch"
        took = _duration(time.perf_counter() - started)
        print(f"test accuracy {result.test_acc:.4f} (weights of {chosen}) in {took}; run saved in {result.run_dir}, "
              f"plot {result.run_dir / CURVES}")
        return 0
    print(result.message, file=sys.stderr)
    if result.status == "interrupted" and (result.run_dir / "checkpoint.safetensors").is_file():
        print(f"continue with: normlab train --resume {result.run_dir}", file=sys.stderr)
    return 130 if result.status == "interrupted" else 1


def _new_run_directory(comm) -> Path:
    """runs/<date-time>, or runs/<date-time>-2, -3, ... when runs started in the same second (chosen by rank 0
    and sent to the others)."""
    run_dir = None
    if comm is None or comm.is_root:
        stem = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
        run_dir = next(p for p in (stem, *(Path(f"{stem}-{k}") for k in range(2, 10**6))) if not p.exists())
    return comm.broadcast_object(run_dir) if comm is not None else run_dir


def _completed_note(run_dir: Path, config) -> str | None:
    """A message when the run in run_dir has trained all its epochs and measured its test accuracy
    (resuming it has nothing to do), else None."""
    from normlab.train.checkpoint import load_meta
    from normlab.train.trainer import CHECKPOINT, HISTORY, plural

    checkpoint = run_dir / CHECKPOINT
    if not checkpoint.is_file() or load_meta(checkpoint).get("epochs_done", 0) < config.epochs:
        return None
    history = run_dir / HISTORY
    try:
        test_acc = json.loads(history.read_text()).get("test_acc") if history.is_file() else None
    except (json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{history}: damaged: expected the JSON object normlab train writes "
                         f"({type(e).__name__}: {e})") from None
    if test_acc is None:  # trained, but stopped before the test: resuming measures it
        return None
    return (f"{run_dir} is already complete ({config.epochs} of {plural(config.epochs, 'epoch')}, test accuracy "
            f"{test_acc:.4f}); nothing to train. To train longer, start a new run with --epochs.")


def _duration(seconds: float) -> str:
    """'42.6 s', or '3 min 05 s' from a minute on."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"
