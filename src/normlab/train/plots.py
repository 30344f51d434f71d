"""curves.png (the training loss per iteration and the accuracies per epoch, side by side) and
confusion.png (`normlab evaluate`)."""

from __future__ import annotations

import io
import os

import numpy as np

from normlab.files import atomic_write_bytes
from normlab.train.history import History


def curves_figure(history: History, title: str = ""):
    """The figure of curves.png: training loss per iteration (left), accuracies per epoch (right, whole
    epochs on the axis even for a single one). The caller closes it (`save_figure` does)."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    loss = np.asarray(history.loss, dtype=float)
    steps = np.arange(1, len(loss) + 1)
    ax_loss.plot(steps, loss, lw=0.5, alpha=0.4, label="iteration")
    window = max(1, len(loss) // 50)
    if len(loss) >= window > 1:
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        ax_loss.plot(steps[window - 1:], smooth, lw=1.5, label=f"mean of {window}")
    ax_loss.set(xlabel="iteration", ylabel="training loss", title="loss")
    ax_loss.legend()
    epochs = [e.epoch for e in history.epochs]
    ax_acc.plot(epochs, [e.train_acc for e in history.epochs], "o-", label="train")
    if any(e.val_acc is not None for e in history.epochs):
        ax_acc.plot(epochs, [e.val_acc for e in history.epochs], "o-", label="validation")
    if history.test_acc is not None and epochs:
        ax_acc.axhline(history.test_acc, ls="--", color="gray", label=f"test {history.test_acc:.4f}")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    # min_n_ticks=1: with one epoch the view spans 0.95..1.05, where the default asks for two integers,
    # finds one, and falls back to fractional ticks.
    ax_acc.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax_acc.legend()
    if title:
        fig.suptitle(title)
    return fig


def pyplot():
    """matplotlib.pyplot on the Agg backend: figures go to files and never need a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> None:
    """Lay out `fig`, write it as a PNG atomically, and close it."""
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=dpi)
    pyplot().close(fig)
    atomic_write_bytes(path, png.getvalue())


def plot_confusion(confusion: np.ndarray, classes: tuple[str, ...], path: str | os.PathLike, title: str = "") -> None:
    """confusion.png: counts (K, K) (rows true classes, columns predicted) as an image with each cell's count
    written in it, the class names on both axes and a colorbar of counts (log scale: the diagonal holds
    most examples, the mistakes are tens)."""
    from matplotlib.colors import LogNorm

    plt = pyplot()
    k = len(classes)
    size = max(5.0, 0.55 * k + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    shown = np.ma.masked_equal(confusion, 0)  # log scale: zero cells are left blank
    image = ax.imshow(shown, cmap="Blues", norm=LogNorm(vmin=1, vmax=max(1, int(confusion.max()))))
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    colorbar.set_label("examples (log scale)")
    threshold = np.sqrt(max(1, int(confusion.max())))  # white text on dark cells
    for i in range(k):
        for j in range(k):
            if confusion[i, j]:
                ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if confusion[i, j] > threshold else "black")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set(xlabel="predicted class", ylabel="true class", title=title or "confusion matrix")
    save_figure(fig, path)
