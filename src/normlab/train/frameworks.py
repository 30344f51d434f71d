"""Training a normlab model's PyTorch or Keras/TensorFlow twin with the same Trainer: `normlab train
--framework torch|tensorflow`.

The Trainer keeps everything but the step: the data, the split and standardization, each epoch's order,
the augmentation, the schedule, evaluation, history.json and the checkpoints. A `FrameworkSteps` object
stands in for its optimizer: it owns the twin (`to_torch` / `to_keras` of the normlab model, so the
initial weights are the same) and the framework's optimizer, takes a step on a batch, scores inputs, and
hands the weights back under normlab's names, so model.safetensors and checkpoint.safetensors of a torch
or TensorFlow run load into the normlab model like a NumPy run's.

Hyperparameters map one to one: SGD (momentum, Nesterov), Adam, AdamW, RMSProp with normlab's
defaults (betas (0.9, 0.999), eps 1e-8, alpha 0.99); weight decay reaches only the weights (the
parameters `normlab.models.regularization.weight_parameters` names), coupled (added to the gradient)
for SGD, Adam and RMSProp and decoupled for AdamW, as normlab and torch do; a model's own L2 (`reg`)
is added to the loss. What differs:
- Keras's SGD keeps v = mu * v - lr * g where torch and normlab keep v = mu * v + g and step by lr * v:
  the same while the learning rate is constant, not under a schedule. Keras's Adam puts eps outside the
  bias correction of the second moment, and its RMSProp adds eps inside the square root.
- Dropout masks come from the framework's generator, not the model's rng.
- Keras's batch norm keeps the biased batch variance in its moving variance (normlab's
  convention="keras"), and it does not count batches: num_batches_tracked is advanced by the steps taken.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from normlab.models.regularization import weight_parameters
from normlab.nn import Module
from normlab.train.config import TrainConfig
from normlab.train.trainer import NonFiniteLossError, Trainer


def _weight_names(model: Module) -> list[str]:
    """The normlab names of the weights that decay (and that a model's `reg` penalizes)."""
    chosen = {id(p) for p in weight_parameters(model)}
    return [name for name, p in model.named_parameters() if id(p) in chosen]


class FrameworkSteps:
    """The Trainer's optimizer for a framework twin. It offers what the Trainer asks of an Optimizer
    (lr, set_lr_factor, state_dict / load_state_dict of the optimizer's state) and:
    - train_step(x, y) -> loss, one step on a normlab-layout batch x (B, ...) with labels y (B,);
    - scores(x) -> (B, K) class scores in evaluation mode;
    - weights() -> the twin's state dict under normlab names; load_weights(state) the other way."""

    def __init__(self, model: Module, config: TrainConfig):
        self.model = model
        self.base_lr = config.lr
        self.factor = 1.0
        self.decay_names = set(_weight_names(model)) if config.weight_decay else set()
        self.weight_decay = config.weight_decay
        self.reg = float(getattr(model, "reg", 0.0) or 0.0)
        self.reg_names = _weight_names(model) if self.reg else []

    @property
    def lr(self) -> float:
        return self.base_lr * self.factor

    def set_lr_factor(self, factor: float) -> None:
        self.factor = factor
        self._apply_lr(self.lr)

    def _check_finite(self, loss: float) -> float:
        if not math.isfinite(loss):
            raise NonFiniteLossError(f"loss is {loss}")
        return loss


class TorchSteps(FrameworkSteps):
    def __init__(self, model: Module, config: TrainConfig):
        super().__init__(model, config)
        from normlab.interop.torch import import_torch, to_torch

        torch = self.torch = import_torch()
        self.twin = to_torch(model)
        params = dict(self.twin.named_parameters())
        groups = [{"params": [p for n, p in params.items() if n in self.decay_names], "weight_decay": self.weight_decay},
                  {"params": [p for n, p in params.items() if n not in self.decay_names], "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
        lr = config.lr
        self.optimizer = {
            "sgd": lambda: torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=config.nesterov),
            "adam": lambda: torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8),
            "adamw": lambda: torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8),
            "rmsprop": lambda: torch.optim.RMSprop(groups, lr=lr, alpha=0.99, eps=1e-8),
        }[config.optimizer]()
        self.reg_params = [params[n] for n in self.reg_names]

    def _apply_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        torch = self.torch
        self.twin.train()
        logits = self.twin(torch.from_numpy(np.ascontiguousarray(x)))  # (B, K)
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y.astype(np.int64)))
        if self.reg:
            loss = loss + 0.5 * self.reg * sum((p * p).sum() for p in self.reg_params)
        value = self._check_finite(loss.item())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return value

    def scores(self, x: np.ndarray) -> np.ndarray:
        self.twin.eval()
        with self.torch.no_grad():
            return self.twin(self.torch.from_numpy(np.ascontiguousarray(x))).numpy()

    def weights(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy().copy() for k, v in self.twin.state_dict().items()}

    def load_weights(self, state) -> None:
        self.twin.load_state_dict({k: self.torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The torch optimizer's state: arrays "<param index>.<name>", meta its param groups (JSON-able)."""
        saved = self.optimizer.state_dict()
        arrays = {f"{i}.{k}": v.detach().numpy().copy() for i, s in saved["state"].items() for k, v in s.items()}
        return arrays, {"framework": "torch", "param_groups": saved["param_groups"], "factor": self.factor}

    def load_state_dict(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        state: dict[int, dict] = {}
        for key, value in arrays.items():
            index, name = key.split(".", 1)
            state.setdefault(int(index), {})[name] = self.torch.from_numpy(np.array(value))
        groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})
        self.factor = meta["factor"]


class KerasSteps(FrameworkSteps):
    def __init__(self, model: Module, config: TrainConfig, input_shape: tuple[int, ...]):
        super().__init__(model, config)
        from normlab.interop.keras import import_keras, keras_variables, to_keras

        keras = import_keras()
        import tensorflow as tf

        self.tf, self.keras = tf, keras
        self.twin = to_keras(model, input_shape)
        variables = keras_variables(model, self.twin)
        self.trainable = list(self.twin.trainable_variables)
        decay_ids = {id(variables[n]) for n in self.decay_names}
        self.decayed = [v for v in self.trainable if id(v) in decay_ids]
        self.coupled = [id(v) in decay_ids for v in self.trainable] if config.optimizer != "adamw" else None
        reg_vars = [variables[n] for n in self.reg_names]
        lr = config.lr
        self.optimizer = {
            "sgd": lambda: keras.optimizers.SGD(lr, momentum=config.momentum, nesterov=config.nesterov),
            "adam": lambda: keras.optimizers.Adam(lr, beta_1=0.9, beta_2=0.999, epsilon=1e-8),
            "adamw": lambda: keras.optimizers.Adam(lr, beta_1=0.9, beta_2=0.999, epsilon=1e-8),  # decay below
            "rmsprop": lambda: keras.optimizers.RMSprop(lr, rho=0.99, epsilon=1e-8),
        }[config.optimizer]()
        self.optimizer.build(self.trainable)
        self.steps_since_pull = 0
        wd, reg, decoupled = self.weight_decay, self.reg, config.optimizer == "adamw" and self.weight_decay > 0

        @tf.function
        def loss_and_grads(x, y):
            with tf.GradientTape() as tape:
                logits = self.twin(x, training=True)  # (B, K); updates the moving statistics
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
                if reg:
                    loss += 0.5 * reg * tf.add_n([tf.reduce_sum(tf.square(v)) for v in reg_vars])
            grads = tape.gradient(loss, self.trainable)
            if wd and self.coupled is not None:
                grads = [g + wd * v if c else g for g, v, c in zip(grads, self.trainable, self.coupled)]
            return loss, grads

        @tf.function
        def apply(grads):
            if decoupled:  # AdamW: shrink the weights first, p = p * (1 - lr * wd)
                for v in self.decayed:
                    v.assign(v * (1.0 - self.optimizer.learning_rate * wd))
            self.optimizer.apply_gradients(zip(grads, self.trainable))

        self._loss_and_grads, self._apply = loss_and_grads, apply

    def _apply_lr(self, lr: float) -> None:
        self.optimizer.learning_rate.assign(lr)

    @staticmethod
    def _channels_last(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.moveaxis(x, 1, -1)) if x.ndim == 4 else x  # (B, C, H, W) -> (B, H, W, C)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        loss, grads = self._loss_and_grads(self._channels_last(x), y.astype(np.int64))
        value = self._check_finite(float(loss))
        self._apply(grads)
        self.steps_since_pull += 1
        return value

    def scores(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.twin(self._channels_last(x), training=False))

    def weights(self) -> dict[str, np.ndarray]:
        from normlab.interop.keras import state_dict_from_keras

        state = self.model.state_dict()
        for name in state:
            if name.endswith("num_batches_tracked"):  # Keras keeps no count
                state[name] = state[name] + self.steps_since_pull
        self.steps_since_pull = 0
        state.update(state_dict_from_keras(self.model, self.twin))
        return state

    def load_weights(self, state) -> None:
        from normlab.interop.keras import load_state_dict_into_keras

        load_state_dict_into_keras(self.model, self.twin, state)
        self.steps_since_pull = 0

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The Keras optimizer's variables, by position."""
        arrays = {str(i): np.asarray(v) for i, v in enumerate(self.optimizer.variables)}
        return arrays, {"framework": "tensorflow", "factor": self.factor}

    def load_state_dict(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        for i, v in enumerate(self.optimizer.variables):
            v.assign(arrays[str(i)])
        self.factor = meta["factor"]


class FrameworkTrainer(Trainer):
    """A Trainer whose steps and predictions run in a framework twin (`optimizer` is a FrameworkSteps).
    The normlab model is brought up to date from the twin before anything reads it (end of epoch,
    checkpoints), and the twin from the model after anything writes it (resume, load_best)."""

    optimizer: FrameworkSteps

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        self.optimizer.set_lr_factor(self.schedule(self.iteration))
        return self.optimizer.train_step(x, y)

    def predict(self, x: np.ndarray, desc: str = "evaluating") -> np.ndarray:
        preds = [self.optimizer.scores(x[idx]).argmax(axis=1) for idx in self.eval_batches(len(x), desc)]
        return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)

    def pull_weights(self) -> None:
        self.model.load_state_dict(self.optimizer.weights())

    def _end_epoch(self) -> None:
        self.pull_weights()
        super()._end_epoch()

    def state(self):
        self.pull_weights()
        return super().state()

    def load_checkpoint(self, path: str | Path) -> None:
        super().load_checkpoint(path)
        self.optimizer.load_weights(self.model.state_dict())

    def load_best(self) -> None:
        super().load_best()
        self.optimizer.load_weights(self.model.state_dict())
