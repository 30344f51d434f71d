"""What a run shows while it works and what its plot says: progress bars on every evaluation pass, and
curves.png with whole epochs on its axis and a title that tells runs apart."""

import numpy as np
import pytest

from normlab.models import FullyConnectedNet, build_model
from normlab.optim import Adam
from normlab.train import Trainer
from normlab.train.config import TrainConfig
from normlab.train.history import EpochRecord, History
from normlab.train.plots import curves_figure, pyplot
from normlab.train.run import curves_title, run_training


def small_trainer(progress=True, n=100, n_val=30):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((n + n_val, 6)).astype(np.float32), rng.integers(0, 3, n + n_val)
    net = FullyConnectedNet(6, (8,), 3, normalization="batch", rng=rng)
    return Trainer(net, Adam(net.parameters()), x[:n], y[:n], x[n:], y[n:], epochs=1, batch_size=20, rng=rng,
                   progress=progress, log=lambda s: None, eval_batch_size=7)


def test_evaluation_batches_come_under_a_named_progress_bar_that_progress_false_turns_off(monkeypatch):
    import tqdm

    bars = []

    def recording_tqdm(batches, **options):
        bars.append(options)
        return iter(batches)

    monkeypatch.setattr(tqdm, "tqdm", recording_tqdm)
    batches = list(small_trainer().eval_batches(30, "validation"))
    assert np.array_equal(np.concatenate(batches), np.arange(30)) and len(batches) == 5  # ceil(30 / 7)
    small_trainer(progress=False).eval_batches(30, "validation")
    on, off = bars
    assert on["desc"] == off["desc"] == "validation" and not on["leave"]
    assert on["disable"] is None  # shown where stderr is a terminal
    assert off["disable"] is True


def test_every_evaluation_pass_of_a_run_has_its_progress_bar(monkeypatch, toy_fashion, tmp_path):
    shown = []
    original = Trainer.eval_batches

    def recording(self, n, desc):
        shown.append((desc, n))
        return original(self, n, desc)

    monkeypatch.setattr(Trainer, "eval_batches", recording)
    config = TrainConfig(model_options={"hidden_dims": (8,), "normalization": "batch"}, epochs=1)
    result = run_training(config, tmp_path / "run", data_dir=toy_fashion, download=False, progress=False,
                          log=lambda s: None)
    assert result.status == "completed"
    assert shown == [("train accuracy", 360), ("validation", 40), ("test", 100)]


def one_epoch_history():
    return History(loss=[2.3, 1.9, 1.5], lr=[1e-3] * 3, test_acc=0.71,
                   epochs=[EpochRecord(1, 1.9, 0.7, 0.69, 1e-3, 1.0, 0.1)])


@pytest.mark.parametrize("epochs", [1, 2, 3, 7])
def test_the_accuracy_plot_has_whole_epoch_ticks_even_for_one_epoch(epochs):
    history = one_epoch_history()
    history.epochs = [EpochRecord(k, 1.0, 0.7, 0.7, 1e-3, 1.0, 0.1) for k in range(1, epochs + 1)]
    fig = curves_figure(history, "title")
    try:
        fig.canvas.draw()
        ax_acc = fig.axes[1]
        low, high = ax_acc.get_xlim()
        ticks = [t for t in ax_acc.get_xticks() if low <= t <= high]
        assert ticks == list(range(1, epochs + 1))
    finally:
        pyplot().close(fig)


def test_the_plot_title_names_the_normalization_optimizer_and_framework():
    config = TrainConfig(optimizer="sgd", lr=0.05, framework="torch",
                         model_options={"hidden_dims": (8,), "normalization": "layer"})
    model = build_model("fcnet", input_shape=(1, 4, 4), num_classes=3, rng=np.random.default_rng(0),
                        **config.model_options)
    title = curves_title(config, model)
    assert title == "fcnet, layer norm, on fashion-mnist: sgd lr 0.05, torch"
    none = build_model("fcnet", input_shape=(1, 4, 4), num_classes=3, rng=np.random.default_rng(0),
                       normalization="none")
    assert curves_title(TrainConfig(), none) == "fcnet, no normalization, on fashion-mnist: adam lr 0.001, numpy"
    fig = curves_figure(one_epoch_history(), title)
    try:
        assert fig._suptitle.get_text() == title
    finally:
        pyplot().close(fig)
