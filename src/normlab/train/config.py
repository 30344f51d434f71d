"""A training run's configuration: everything that decides its result, saved as config.json.

The CLI builds a TrainConfig from its arguments; `normlab.train.run.run_training` executes one with the
NumPy models. Keeping the two apart lets another backend (PyTorch, Keras) run the same configuration.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from normlab.checks import check_non_negative_int, check_positive_int
from normlab.models import model_builder

# Each optimizer's default learning rate, used when none is given.
DEFAULT_LR = {"sgd": 1e-2, "rmsprop": 1e-3, "adam": 1e-3, "adamw": 1e-3}
SCHEDULES = ("constant", "step", "cosine")
FRAMEWORKS = ("numpy", "torch", "tensorflow")


@dataclass
class TrainConfig:
    """The defaults are `normlab train`'s: a batch-normalized FullyConnectedNet (512, 256) on
    Fashion-MNIST, Adam at 1e-3 with cosine decay, 5 epochs of batches of 128."""

    dataset: str = "fashion-mnist"
    model: str = "fcnet"
    model_options: dict[str, Any] = field(default_factory=dict)  # keywords for the model's builder
    optimizer: str = "adam"  # sgd, rmsprop, adam, adamw
    lr: float = 1e-3
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    weight_decay: float = 0.0  # the optimizer's decay of the weights (decoupled in AdamW); never gamma, beta
    schedule: str = "cosine"  # constant, step, cosine
    warmup_epochs: float = 0.0  # linear warm-up before the schedule
    step_epochs: int = 2  # step schedule: multiply the lr by step_gamma every step_epochs epochs
    step_gamma: float = 0.1
    epochs: int = 5
    batch_size: int = 128
    seed: int = 0
    val_size: int | None = None  # training examples held out for validation; None: min(5000, a tenth)
    limit: int | None = None  # use only the first `limit` training examples (quick runs)
    augment: bool = False  # random crop (padding 4 for 32x32 images, 2 otherwise) and horizontal flip
    framework: str = "numpy"  # numpy, or train the model's twin in torch or tensorflow
    precise_bn: int = 0  # after training, batch norm statistics recomputed from this many training batches

    def __post_init__(self) -> None:
        from normlab.optim import OPTIMIZERS

        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.framework not in FRAMEWORKS:
            raise ValueError(f"framework must be one of {FRAMEWORKS}, got {self.framework!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("epochs", "batch_size", "step_epochs"):
            check_positive_int(name, getattr(self, name))
        check_non_negative_int("precise_bn", self.precise_bn, what="(batches)")
        if self.limit is not None and self.limit < 2:
            raise ValueError(f"limit must be at least 2 examples, got {self.limit!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        self._check_normalization()

    def _check_normalization(self) -> None:
        """A normalization, its options and its placement in model_options must be ones of the vocabulary
        (normlab.nn.norm_registry), so a damaged or hand-edited config.json fails here, not mid-run."""
        from normlab.nn.norm_registry import check_norm_options, check_placement

        if not isinstance(self.model_options, dict):
            raise ValueError(  # noqa: TRY004 (a damaged file: the callers report ValueError)
                f"model_options must be a dict of the model's options, got {self.model_options!r}")
        options = self.model_options
        if "placement" in options:
            check_placement(options["placement"])
        norm_options = options.get("norm_options")
        if norm_options is not None and not isinstance(norm_options, dict):
            raise ValueError(f"norm_options must be a dict of the normalization's options, got {norm_options!r}")
        normalization = options.get("normalization", builder_default(self.model, "normalization"))
        if normalization is not None:
            # A builder says whether it normalizes (N, D) features or (N, C, H, W) maps (instance norm needs maps).
            kind = getattr(model_builder(self.model), "normalizes", None)
            check_norm_options(normalization, norm_options, spatial=None if kind is None else kind == "maps")
        elif norm_options:
            raise ValueError(f"model {self.model!r} has no normalization to take norm_options {norm_options!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown configuration keys {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a config.json; a damaged one raises ValueError naming the file and what is wrong."""
        try:
            d = json.loads(Path(path).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: damaged: not JSON ({e})") from None
        if not isinstance(d, dict):
            raise ValueError(  # noqa: TRY004 (a damaged file: the callers report ValueError)
                f"{path}: damaged: expected a JSON object of settings, got {type(d).__name__}")
        try:
            return cls.from_dict(d)
        except (TypeError, ValueError, KeyError) as e:
            raise ValueError(f"{path}: {e}") from None


def builder_options(model: str) -> dict[str, inspect.Parameter]:
    """The keyword options the model's builder takes (beyond input_shape, num_classes, rng), by name."""
    params = inspect.signature(model_builder(model)).parameters
    named = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return {k: p for k, p in params.items() if k not in ("input_shape", "num_classes", "rng") and p.kind in named}


def builder_default(model: str, name: str):
    """The default of the model builder's option `name`, None when it has no such option (or no default)."""
    parameter = inspect.signature(model_builder(model)).parameters.get(name)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return None
    return parameter.default


def takes_option(model: str, name: str) -> bool:
    params = inspect.signature(model_builder(model)).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def model_options(model: str, given: dict[str, Any]) -> dict[str, Any]:
    """The builder keywords from options the user gave (None = not given): each must be one the builder
    takes; a message names the option and the model otherwise."""
    options = {}
    for name, value in given.items():
        if value is None:
            continue
        if not takes_option(model, name):
            raise ValueError(f"model {model!r} does not take the option {name!r} (it takes "
                             f"{sorted(builder_options(model))})")
        options[name] = value
    return options


def default_augment(model: str) -> bool:
    """Whether the model asks for augmentation when the user does not say (builder.default_augment)."""
    return bool(getattr(model_builder(model), "default_augment", False))
