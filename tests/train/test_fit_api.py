"""Trainer(model, optimizer).fit(train, val, epochs=...): the framework-style entry to the one training loop,
with the defaults of `normlab train`."""

import numpy as np
import pytest

from normlab.models import FullyConnectedNet
from normlab.optim import Adam, Constant, Cosine
from normlab.train import Trainer


def toy_data(seed=0, n=120):
    """Three classes separable by a linear rule on 1x4x4 inputs."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + 40, 1, 4, 4)).astype(np.float32)
    y = (x.reshape(len(x), -1) @ rng.standard_normal((16, 3))).argmax(axis=1)
    return (x[:n], y[:n]), (x[n:], y[n:])


def model_and_optimizer(seed=0):
    model = FullyConnectedNet(16, (12,), 3, normalization="batch", rng=np.random.default_rng(seed))
    return model, Adam(model.parameters(), lr=1e-2)


def test_fit_learns_and_returns_the_history():
    train, val = toy_data(n=800)
    model, optimizer = model_and_optimizer()
    result = Trainer(model, optimizer, batch_size=32, rng=np.random.default_rng(1), log=lambda s: None).fit(
        train, val, epochs=4)
    assert result.status == "completed"
    history = result.history
    assert [e.epoch for e in history.epochs] == [1, 2, 3, 4] and len(history.loss) == 4 * 25
    assert history.epochs[-1].train_acc > 0.8 and history.epochs[-1].val_acc > 0.6  # chance: 1/3
    assert history.loss[-1] < history.loss[0]


def test_fit_defaults_are_normlab_trains():
    trainer = Trainer(*model_and_optimizer())
    assert (trainer.epochs, trainer.batch_size, trainer.schedule_name) == (5, 128, "cosine")
    train, val = toy_data(n=300)
    trainer.progress, trainer.log = False, lambda s: None
    trainer.fit(train, val)
    # Cosine decay over the whole run (3 steps of 128 x 5 epochs), as normlab train's schedule.
    assert isinstance(trainer.schedule, Cosine) and trainer.schedule.total_steps == 15
    expected = [1e-2 * Cosine(15)(i) for i in range(15)]
    np.testing.assert_allclose(trainer.history.lr, expected, rtol=1e-12)


def test_fit_with_data_equals_the_constructor_with_data():
    train, val = toy_data()
    kwargs = {"epochs": 2, "batch_size": 16, "progress": False, "log": lambda s: None}
    a_model, a_opt = model_and_optimizer()
    a = Trainer(a_model, a_opt, *train, *val, rng=np.random.default_rng(5), schedule=Cosine(16), **kwargs).fit()
    b_model, b_opt = model_and_optimizer()
    b = Trainer(b_model, b_opt, rng=np.random.default_rng(5), **kwargs).fit(train, val)
    assert a.history.loss == b.history.loss and a.history.lr == b.history.lr
    assert all(np.array_equal(v, b_model.state_dict()[k]) for k, v in a_model.state_dict().items())


def test_an_assigned_schedule_replaces_the_named_default():
    train, val = toy_data()
    trainer = Trainer(*model_and_optimizer(), epochs=1, batch_size=40, progress=False, log=lambda s: None)
    trainer.schedule = Constant()  # as run_training assigns the configured schedule
    trainer.fit(train, val)
    assert trainer.history.lr == [1e-2] * 3


def test_fit_without_validation_data():
    train, _ = toy_data()
    result = Trainer(*model_and_optimizer(), batch_size=40, progress=False, log=lambda s: None).fit(train, epochs=1)
    assert result.status == "completed" and result.history.epochs[0].val_acc is None


def test_fit_errors_name_the_argument():
    train, val = toy_data()
    trainer = Trainer(*model_and_optimizer(), progress=False, log=lambda s: None)
    with pytest.raises(ValueError, match="no training data"):
        trainer.fit()
    with pytest.raises(ValueError, match="val was given without train"):
        trainer.fit(val=val)
    with pytest.raises(TypeError, match=r"train must be a pair \(x, y\) of arrays, got ndarray"):
        trainer.fit(train[0])
    with pytest.raises(TypeError, match=r"val must be a pair \(x, y\) of numpy arrays, got \(list, ndarray\)"):
        trainer.fit(train, ([1, 2], val[1]))
    with pytest.raises(ValueError, match="inputs and labels must have the same length"):
        trainer.fit((train[0], train[1][:5]))
    with pytest.raises(ValueError, match="epochs must be a positive integer, got 0"):
        trainer.fit(train, epochs=0)
    with pytest.raises(ValueError, match="schedule must be a Schedule, None or one of"):
        Trainer(*model_and_optimizer(), schedule="linear")
