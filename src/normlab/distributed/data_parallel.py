"""Data-parallel training: every process holds the same model and trains it on its part of each global
batch; the gradients are added up over the processes after every backward, so every process applies the
same update and the parameters stay identical.

The weighting. A step's loss is the mean over the global batch of N = sum_r n_r samples,

    L = (1/N) sum_i l_i,

and process r holds n_r of them. It backpropagates the gradient of its share of L,
(1/N) sum_{i in r} l_i = (n_r / N) * (its local mean loss): the gradient of the local mean loss times
`loss_weight` = n_r / N. The shares add up to L, so their gradients, summed over the processes by
`allreduce_gradients`, are dL/dtheta exactly. With equal local batches n_r / N = 1 / P and this is the
familiar average of the local gradients. The weight is applied before the backward, not to the gradients
after it, because SyncBatchNorm's backward mixes the processes' upstream gradients: they must all be
gradients of the same L.

A training loop uses it in four places (`data_parallel_step` is the step, `DataParallel` all of it in one
object):

    model = convert_sync_batchnorm(model)             # optional: global batch statistics
    broadcast_state(model)                            # identical start (and after loading a checkpoint)
    ... x, y = shard(x_global), shard(y_global)       # this process's part of the global batch
    ... model.backward(dloss * loss_weight(len(x)))   # its share of the global mean loss
    ... allreduce_gradients(model); optimizer.step()  # dL/dtheta on every process
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from normlab.distributed.comm import Communicator, world
from normlab.nn.module import Module, input_grad_skipped
from normlab.nn.syncbatchnorm import convert_sync_batchnorm

LossFunction = Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]


def shard_slice(n: int, rank: int, size: int) -> slice:
    """The part of n items that process `rank` of `size` takes: contiguous, in rank order, sizes differing
    by at most one (the first n % size ranks take one more), so the parts concatenated in rank order are
    the n items."""
    if not 0 <= rank < size:
        raise ValueError(f"rank must be in [0, size={size}), got {rank!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n!r}")
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def shard(array: np.ndarray, comm: Communicator | None = None) -> np.ndarray:
    """This process's part of `array` along axis 0 (a view): of a global batch, or of a whole data set."""
    comm = world() if comm is None else comm
    return array[shard_slice(len(array), comm.rank, comm.size)]


def broadcast_state(model: Module, comm: Communicator | None = None, root: int = 0) -> None:
    """Copy root's parameters and buffers into every process's model, so all start identical: call it
    after building the model (each process initialized its own) and after root loaded a checkpoint.

    Raises ValueError on every process when the models' state dicts differ in names, shapes or dtypes.
    """
    comm = world() if comm is None else comm
    if comm.size == 1:
        return
    state = model.state_dict()  # contiguous copies, received into and loaded back
    layouts = comm.allgather_object([(name, a.shape, a.dtype.str) for name, a in state.items()])
    differing = [r for r, layout in enumerate(layouts) if layout != layouts[root]]
    if differing:
        raise ValueError(f"the models differ between processes: the state dicts of ranks {differing} do not "
                         f"match rank {root}'s in names, shapes or dtypes; every process must build the same model")
    for array in state.values():
        comm.broadcast(array, root)
    model.load_state_dict(state)


def global_count(local_count: int, comm: Communicator | None = None) -> int:
    """N = sum over the processes of their `local_count` (the global batch size)."""
    comm = world() if comm is None else comm
    if local_count < 0:
        raise ValueError(f"local_count must be >= 0, got {local_count!r}")
    return int(comm.allreduce_sum(np.array([float(local_count)]))[0])


def loss_weight(local_count: int, comm: Communicator | None = None) -> float:
    """n_r / N: what this process multiplies the gradient of its local mean loss by, before the backward,
    so that the summed gradients are those of the global batch's mean loss (see the module docstring)."""
    total = global_count(local_count, comm)
    if total == 0:
        raise ValueError("the global batch is empty: every process passed local_count=0")
    return local_count / total


def allreduce_gradients(model: Module, comm: Communicator | None = None, extras: Sequence[float] = (), *,
                        workspace: np.ndarray | None = None) -> np.ndarray:
    """Replace every parameter's .grad by its sum over the processes, in one float64 all-reduce.

    With the loss weighted by `loss_weight`, the sum is the gradient of the global batch's mean loss. A
    parameter without a gradient on this process counts as zero; one without a gradient on every process
    keeps grad None. `extras` (e.g. this process's share of the loss, its number of correct predictions)
    ride in the same message. `workspace`: a float64 array of at least `gradient_workspace_size` elements
    to pack into; reusing one saves allocating (and page-faulting) megabytes every step.

    Returns the extras summed over the processes, float64 of shape (len(extras),).
    """
    comm = world() if comm is None else comm
    if comm.size == 1:
        return np.array(extras, dtype=np.float64)  # the gradients already are the sums
    params = model.parameters()
    offsets = np.cumsum([0, *(p.data.size for p in params)])
    k, n = len(params), gradient_workspace_size(model, len(extras))
    if workspace is None:
        workspace = np.empty(n)
    elif workspace.dtype != np.float64 or workspace.ndim != 1 or workspace.size < n:
        raise ValueError(f"workspace must be a 1-D float64 array of at least {n} elements, got "
                         f"{workspace.dtype} of shape {workspace.shape}")
    buf = workspace[:n]  # [grads..., has_grad (k), extras], float64
    flags = buf[offsets[-1]:offsets[-1] + k]
    for i, p in enumerate(params):
        buf[offsets[i]:offsets[i + 1]] = 0.0 if p.grad is None else p.grad.reshape(-1)
        flags[i] = p.grad is not None
    buf[offsets[-1] + k:] = extras
    comm.allreduce_sum(buf)
    for i, p in enumerate(params):
        if flags[i] > 0:
            total = buf[offsets[i]:offsets[i + 1]].reshape(p.shape)
            if p.grad is None:
                p.grad = total.astype(p.data.dtype)
            else:
                p.grad[...] = total
    return buf[offsets[-1] + k:].copy()


def gradient_workspace_size(model: Module, num_extras: int = 0) -> int:
    """Elements of the float64 buffer `allreduce_gradients` packs: every parameter, a flag each, the extras."""
    params = model.parameters()
    return sum(p.data.size for p in params) + len(params) + num_extras


def check_synchronized(model: Module, comm: Communicator | None = None) -> None:
    """Raise RuntimeError, on every process, unless every parameter and buffer is bitwise identical on all
    processes (compares a 16-byte digest of the state dict)."""
    comm = world() if comm is None else comm
    digest = hashlib.blake2b(digest_size=16)
    for name, array in model.state_dict().items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    digests = comm.allgather(np.frombuffer(digest.digest(), dtype=np.uint8).copy())  # (P, 16)
    differing = [r for r in range(comm.size) if not np.array_equal(digests[r], digests[0])]
    if differing:
        raise RuntimeError(f"the model's parameters or buffers on ranks {differing} differ from rank 0's")


class StepResult(NamedTuple):
    """What `data_parallel_step` (and so `DataParallel.train_step`) returns."""

    loss: float  # mean loss over the global batch (the same on every process)
    output: np.ndarray  # this process's model output, (n_local, ...)
    local_count: int  # samples this process trained on
    global_count: int  # samples in the global batch


def data_parallel_step(model: Module, x: np.ndarray, y: np.ndarray, loss_fn: LossFunction,
                       comm: Communicator | None = None, *, before_allreduce: Callable[[], object] | None = None,
                       extras: Sequence[float] = (), workspace: np.ndarray | None = None
                       ) -> tuple[StepResult, np.ndarray]:
    """The data-parallel step, up to the optimizer (`DataParallel.train_step` and normlab.train's `Trainer`
    run this one): forward, loss and backward on this process's part (x, y) of a global batch, the loss
    gradient weighted by n_r / N, then every .grad summed over the processes; a collective operation
    (every process calls it once per global batch). With one process it is plain training, bit for bit.

    Inputs:
    - x: (n_local, ...) inputs; y: (n_local, ...) targets; n_local may differ between processes (and be 0).
    - loss_fn: (output, y) -> (mean loss, d mean loss / d output), e.g. softmax_cross_entropy.
    - before_allreduce: called after the backward, before the sum: the place for gradients that one process
      adds on behalf of all (the trainer's regularization, on rank 0).
    - extras: numbers summed over the processes in the same message (the trainer's stop request).
    - workspace: see `allreduce_gradients`.

    Returns (StepResult, the extras summed, float64 (len(extras),)). Afterwards every parameter's .grad is
    the gradient of the global batch's mean loss, on every process.
    """
    comm = world() if comm is None else comm
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    n = global_count(len(x), comm)
    if n == 0:
        raise ValueError("the global batch is empty: every process passed an empty x")
    weight = len(x) / n
    model.zero_grad()
    output = model.forward(x)  # (n_local, ...)
    loss, doutput = loss_fn(output, y)
    with input_grad_skipped(model):  # the inputs are data: no gradient
        model.backward(doutput * weight)
    if before_allreduce is not None:
        before_allreduce()
    share = loss * weight if len(x) else 0.0  # an empty part's mean loss is NaN, and its share nothing
    sums = allreduce_gradients(model, comm, extras=[share, *extras], workspace=workspace)
    return StepResult(float(sums[0]), output, len(x), n), sums[1:]


class DataParallel:
    """A model trained data-parallel over `comm` (default: `world()`).

    On creation the model's batch norms become SyncBatchNorm (unless sync_batchnorm=False) and every
    process's parameters and buffers are overwritten with rank 0's. Then, per global batch:

        x, y = dp.shard(x_global), dp.shard(y_global)
        result = dp.train_step(x, y, softmax_cross_entropy)   # gradients are the global batch's
        optimizer.step()                                      # the same update on every process
        if dp.is_root: ...                                    # only rank 0 writes files

    Run with one process it is the model itself plus no-ops; every method also works on its own.
    """

    def __init__(self, model: Module, comm: Communicator | None = None, *, sync_batchnorm: bool = True):
        self.comm = world() if comm is None else comm
        self.model = convert_sync_batchnorm(model, self.comm) if sync_batchnorm else model
        broadcast_state(self.model, self.comm)
        self._workspace = np.empty(gradient_workspace_size(self.model, 1))  # reused by every step: the loss

    @property
    def rank(self) -> int:
        return self.comm.rank

    @property
    def size(self) -> int:
        return self.comm.size

    @property
    def is_root(self) -> bool:
        return self.comm.is_root

    def shard(self, array: np.ndarray) -> np.ndarray:
        """This process's part of `array` along axis 0."""
        return shard(array, self.comm)

    def train_step(self, x: np.ndarray, y: np.ndarray, loss_fn: LossFunction) -> StepResult:
        """Forward, loss, backward and gradient all-reduce on this process's part (x, y) of a global batch
        (`data_parallel_step`); apply the optimizer next."""
        return data_parallel_step(self.model, x, y, loss_fn, self.comm, workspace=self._workspace)[0]

    def broadcast_state(self, root: int = 0) -> None:
        """Overwrite every process's parameters and buffers with root's (after root loads a checkpoint)."""
        broadcast_state(self.model, self.comm, root)

    def check_synchronized(self) -> None:
        """Raise on every process unless the model is bitwise identical on all (see `check_synchronized`)."""
        check_synchronized(self.model, self.comm)
