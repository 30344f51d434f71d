"""Training: the Trainer loop, atomic safetensors checkpoints, history and curves."""

from normlab.train.checkpoint import load_model, load_tensors, save_model, save_tensors
from normlab.train.history import EpochRecord, History
from normlab.train.trainer import FitResult, NonFiniteLossError, StepInfo, Trainer

__all__ = ["EpochRecord", "FitResult", "History", "NonFiniteLossError", "StepInfo", "Trainer", "load_model",
           "load_tensors", "save_model", "save_tensors"]
