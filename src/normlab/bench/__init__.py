"""Speed of normlab against this machine's memory bandwidth and against PyTorch (`normlab bench`).

It sits above `functional`, `models` and `interop`, whose code it times (the kernels layer may import
none of them), and below the CLI, which only prints what `run_bench` returns.

- `bandwidth`: the copy bandwidth, the bound of memory-bound kernels (the timing itself: `normlab.timing`).
- `normalization`: batch norm (both layouts), layer norm and group norm, forward and backward.
- `models`: a convolution and a training step of the batch-normalized CNN, when those exist.
- `report`: runs everything; a table for people, a dict for tools.
"""

from normlab.bench.report import format_report, run_bench

__all__ = ["format_report", "run_bench"]
