"""Optimizers (SGD with momentum and Nesterov, RMSProp, Adam, AdamW) over parameters (`normlab.nn.Parameter`), and
learning-rate schedules. Each optimizer's docstring gives its update rule and defaults."""

from normlab.optim.adam import Adam, AdamW
from normlab.optim.optimizer import Optimizer
from normlab.optim.rmsprop import RMSProp
from normlab.optim.schedules import Constant, Cosine, LinearWarmup, Schedule, StepDecay
from normlab.optim.sgd import SGD

OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSProp, "adam": Adam, "adamw": AdamW}

__all__ = ["OPTIMIZERS", "SGD", "Adam", "AdamW", "Constant", "Cosine", "LinearWarmup", "Optimizer", "RMSProp",
           "Schedule", "StepDecay"]
