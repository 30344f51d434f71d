"""The Trainer: learning, evaluation mode, determinism, best checkpoint, bit-identical resume, Ctrl-C and
NaN handling."""

import json
import os
import signal

import numpy as np
import pytest

from normlab.data import Augment
from normlab.models import FullyConnectedNet
from normlab.optim import Adam, Cosine, LinearWarmup
from normlab.train import Trainer, load_tensors
from normlab.train.trainer import BEST_MODEL, CHECKPOINT, HISTORY


def toy_data(seed=0, n=120):
    """Three classes separable by a linear rule on 1x4x4 inputs."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + 40, 1, 4, 4)).astype(np.float32)
    w = rng.standard_normal((16, 3))
    y = (x.reshape(len(x), -1) @ w).argmax(axis=1)
    return x[:n], y[:n], x[n:], y[n:]


AUGMENT = Augment(padding=1)


def make_trainer(run_dir=None, *, seed=0, epochs=3, callbacks=(), init_seed=None, augment=AUGMENT, **kwargs):
    """Everything built afresh from seeds, as a resumed process would. The augmentation scrambles the toy
    rule; it is on by default because its generator is part of what a resume must restore."""
    x, y, xv, yv = toy_data()
    init = np.random.default_rng(seed if init_seed is None else init_seed)
    net = FullyConnectedNet(16, (12, 10), 3, normalization="batch", dropout=0.2, rng=init)
    opt = Adam(net.parameters(), lr=1e-2)
    trainer = Trainer(net, opt, x, y, xv, yv, epochs=epochs, batch_size=16, rng=np.random.default_rng(seed + 100),
                      schedule=LinearWarmup(3, Cosine(epochs * 8)), augment=augment, run_dir=run_dir,
                      callbacks=callbacks, progress=False, log=lambda s: None, **kwargs)
    return trainer


def full_state(trainer):
    """The state as a checkpoint stores it, without wall-clock times."""
    arrays, meta = trainer.state()
    meta = json.loads(json.dumps(meta))
    for epoch in meta["history"]["epochs"]:
        del epoch["seconds"], epoch["eval_seconds"]
    return arrays, meta


def assert_same_state(a, b):
    arrays_a, meta_a = full_state(a)
    arrays_b, meta_b = full_state(b)
    assert sorted(arrays_a) == sorted(arrays_b)
    for k in arrays_a:
        assert np.array_equal(arrays_a[k], arrays_b[k]), k
    assert meta_a == meta_b


def test_it_learns_and_records_history(tmp_path):
    trainer = make_trainer(tmp_path, epochs=6, augment=None)
    result = trainer.fit()
    assert result.status == "completed" and result.ok
    h = result.history
    assert len(h.loss) == 6 * 8 == trainer.iteration and len(h.epochs) == 6
    assert np.mean(h.loss[-8:]) < 0.9 * np.mean(h.loss[:8])
    assert h.epochs[-1].val_acc > 0.6 and h.epochs[-1].train_acc > 0.6  # chance is 1/3
    saved = json.loads((tmp_path / HISTORY).read_text())
    assert saved["loss"] == h.loss and saved["epochs"][2]["epoch"] == 3


def test_training_is_deterministic_for_a_seed_and_differs_across_seeds():
    a, b, c = make_trainer(seed=1), make_trainer(seed=1), make_trainer(seed=2)
    for t in (a, b, c):
        t.fit()
    assert_same_state(a, b)
    assert not np.array_equal(a.model[1].weight.data, c.model[1].weight.data)


def test_evaluation_runs_in_eval_mode_and_leaves_the_running_statistics_alone():
    trainer = make_trainer()
    trainer.fit()
    bn = trainer.model[2]
    before = bn.state_dict()
    x = trainer.x_val
    trainer.model.eval()
    expected = trainer.model.forward(x).argmax(axis=1)
    trainer.model.train()
    np.testing.assert_array_equal(trainer.predict(x), expected)
    assert trainer.model.training
    for k, v in bn.state_dict().items():
        assert np.array_equal(v, before[k]), k
    # In eval mode a prediction does not depend on the rest of the batch.
    np.testing.assert_array_equal(trainer.predict(x[:5]), expected[:5])


def test_model_safetensors_holds_the_best_validation_epoch(tmp_path):
    snapshots = {}

    def remember(trainer, info):
        if info.step == info.steps_per_epoch:
            snapshots[info.epoch] = None  # filled in after the epoch's end below

    trainer = make_trainer(tmp_path, epochs=4, callbacks=[remember])
    original_end = trainer._end_epoch

    def end_and_snapshot():
        original_end()
        snapshots[trainer.epochs_done] = trainer.model.state_dict()

    trainer._end_epoch = end_and_snapshot
    trainer.fit()
    best = trainer.history.best_epoch()
    arrays, meta = load_tensors(tmp_path / BEST_MODEL)
    assert meta == {"epoch": best.epoch, "val_acc": best.val_acc}
    for k, v in snapshots[best.epoch].items():
        assert np.array_equal(arrays[k], v), k


@pytest.mark.parametrize("stop_at", [5, 8, 13])  # mid-epoch, at an epoch's last step, later mid-epoch
def test_interrupted_and_resumed_run_ends_bit_identical(stop_at, tmp_path):
    uninterrupted = make_trainer()
    assert uninterrupted.fit().status == "completed"

    def interrupt(trainer, info):
        if info.iteration == stop_at:
            raise KeyboardInterrupt

    first = make_trainer(tmp_path, callbacks=[interrupt])
    result = first.fit()
    assert result.status == "interrupted" and f"(iteration {stop_at})" in result.message
    assert (tmp_path / CHECKPOINT).is_file()

    # A new process: different initial weights (the checkpoint replaces them), fresh generators.
    resumed = make_trainer(tmp_path, init_seed=77)
    assert resumed.fit(resume=True).status == "completed"
    assert_same_state(resumed, uninterrupted)
    assert resumed.history.loss == uninterrupted.history.loss


def test_max_steps_pauses_and_resume_continues(tmp_path):
    uninterrupted = make_trainer()
    uninterrupted.fit()
    first = make_trainer(tmp_path)
    assert first.fit(max_steps=11).status == "paused" and first.iteration == 11
    second = make_trainer(tmp_path)
    assert second.fit(resume=True, max_steps=19).status == "paused" and second.iteration == 19
    third = make_trainer(tmp_path)
    assert third.fit(resume=True).status == "completed"
    assert_same_state(third, uninterrupted)


def test_ctrl_c_finishes_the_step_saves_and_returns(tmp_path):
    def press_ctrl_c(trainer, info):
        if info.iteration == 10:
            os.kill(os.getpid(), signal.SIGINT)

    previous = signal.getsignal(signal.SIGINT)
    trainer = make_trainer(tmp_path, callbacks=[press_ctrl_c])
    result = trainer.fit()
    assert result.status == "interrupted" and "iteration 10" in result.message
    assert "checkpoint saved" in result.message
    assert signal.getsignal(signal.SIGINT) is previous  # the handler is put back
    _, meta = load_tensors(tmp_path / CHECKPOINT)
    assert meta["iteration"] == 10 and meta["epochs_done"] == 1 and meta["step_in_epoch"] == 2


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    def poison(trainer, info):
        if info.iteration == 11:  # epoch 2, step 3; the next step's loss is NaN
            trainer.model[1].weight.data[0, 0] = np.nan

    trainer = make_trainer(tmp_path, callbacks=[poison])
    checkpoint = tmp_path / CHECKPOINT
    seen = {}

    original_end = trainer._end_epoch

    def end_and_record():
        original_end()
        seen["bytes"] = checkpoint.read_bytes()

    trainer._end_epoch = end_and_record
    result = trainer.fit()
    assert result.status == "diverged" and not result.ok
    assert "loss is nan at epoch 2, step 4/8 (iteration 12)" in result.message
    assert "after 1 epoch and 8 iterations" in result.message
    assert checkpoint.read_bytes() == seen["bytes"]  # untouched since the end of epoch 1
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nan_before_any_checkpoint_says_so():
    def poison(trainer, info):
        trainer.model[1].weight.data[...] = np.inf

    result = make_trainer(callbacks=[poison]).fit()
    assert result.status == "diverged" and "step 2/8 (iteration 2)" in result.message
    assert "No checkpoint had been saved" in result.message


def test_resume_checks_the_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        make_trainer(tmp_path).fit(resume=True)
    make_trainer(tmp_path).fit(max_steps=3)
    x, y, xv, yv = toy_data()
    net = FullyConnectedNet(16, (12, 10), 3, normalization="batch", dropout=0.2, rng=np.random.default_rng(0))
    other = Trainer(net, Adam(net.parameters()), x, y, xv, yv, epochs=3, batch_size=32,
                    rng=np.random.default_rng(0), run_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="saved with 8 steps per epoch, this trainer has 4"):
        other.fit(resume=True)
    (tmp_path / CHECKPOINT).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        make_trainer(tmp_path).fit(resume=True)


def test_bad_arguments_are_named():
    x, y, xv, yv = toy_data()
    net = FullyConnectedNet(16, (4,), 3, rng=np.random.default_rng(0))
    opt = Adam(net.parameters())
    with pytest.raises(ValueError, match="epochs must be a positive integer, got 0"):
        Trainer(net, opt, x, y, xv, yv, epochs=0, batch_size=4, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="inputs and labels must have the same length"):
        Trainer(net, opt, x, y[:3], xv, yv, epochs=1, batch_size=4, rng=np.random.default_rng(0))
