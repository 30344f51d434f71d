"""Experiments that test batch norm's claims, one module per claim (see `normlab experiment --help`).
Importing this package registers every experiment, in the order `normlab experiment all` runs them."""

# isort: off
from normlab.experiments import covariate_shift  # noqa: F401  (each module registers its experiment)
from normlab.experiments import learning_rate  # noqa: F401
from normlab.experiments import init_scale  # noqa: F401
from normlab.experiments import batch_size  # noqa: F401
from normlab.experiments import population_statistics  # noqa: F401
from normlab.experiments import large_batch  # noqa: F401
from normlab.experiments import regularization  # noqa: F401
from normlab.experiments import placement  # noqa: F401
from normlab.experiments import sync_batchnorm  # noqa: F401
from normlab.experiments import backward_speed  # noqa: F401
from normlab.experiments import noisy_batchnorm  # noqa: F401
from normlab.experiments import loss_landscape  # noqa: F401
# isort: on
from normlab.experiments.base import EXPERIMENTS, Context, Report, register_experiment, run_experiment

__all__ = ["EXPERIMENTS", "Context", "Report", "register_experiment", "run_experiment"]
