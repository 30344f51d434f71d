"""Training: the Trainer loop, atomic safetensors checkpoints, history and curves; `load_run` to use a
trained run's model."""

from normlab.train.checkpoint import load_model, load_tensors, save_model, save_tensors
from normlab.train.history import EpochRecord, History
from normlab.train.saved_run import LoadedRun, load_run
from normlab.train.trainer import FitResult, NonFiniteLossError, StepInfo, Trainer

__all__ = ["EpochRecord", "FitResult", "History", "LoadedRun", "NonFiniteLossError", "StepInfo", "Trainer",
           "load_model", "load_run", "load_tensors", "save_model", "save_tensors"]
