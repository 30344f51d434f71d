"""`normlab bench` end to end: measure, then a table for people and a dict (JSON) for tools."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from importlib import import_module
from types import ModuleType

import numpy as np

from normlab.bench.bandwidth import copy_bandwidth
from normlab.bench.models import cnn_step_passes, conv2d_passes, measure_optional
from normlab.bench.normalization import FULL_CASES, QUICK_CASES, measure_norm
from normlab.blas import blas_threads, limited_blas_threads
from normlab.kernels.backend import resolve_backend
from normlab.timing import SETTLE_SECONDS, PassTimes

MIB = 1 << 20


def _import_or_none(name: str) -> ModuleType | None:
    try:
        return import_module(name)
    except ImportError:
        return None


@contextmanager
def _same_threads(backend: str, threads: int | None) -> Iterator[tuple[int, ModuleType | None]]:
    """Run the kernels, NumPy's OpenBLAS (at most its own count) and torch on one thread count (`threads`,
    default numba's: every core; 1 for the NumPy backend, whose elementwise work is single-threaded);
    yields (threads, torch or None) and restores all three counts after."""
    numba = import_module("numba") if backend == "numba" else None
    torch = _import_or_none("torch")
    saved = (numba and numba.get_num_threads(), torch and torch.get_num_threads())
    try:
        if numba is not None and threads is not None:
            numba.set_num_threads(threads)  # raises beyond NUMBA_NUM_THREADS, naming the limit
        count = numba.get_num_threads() if numba is not None else 1
        if torch is not None:
            torch.set_num_threads(count)
        with limited_blas_threads(count):  # the convolution and CNN rows are NumPy matrix products
            yield count, torch
    finally:
        if numba is not None:
            numba.set_num_threads(saved[0])
        if torch is not None:
            torch.set_num_threads(saved[1])


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def _times_ms(times: PassTimes, prefix: str = "") -> dict:
    """Median forward, backward and total milliseconds, under keys starting with `prefix` ("torch_", say)."""
    return {f"{prefix}{name}_ms": _ms(getattr(times, name)) for name in ("forward", "backward", "total")}


def _norm_row(case, times: dict[str, PassTimes], limit: float) -> dict:
    ours = times["normlab"]
    elements = int(np.prod(case.shape))
    itemsize = np.dtype(np.float32).itemsize
    fwd_bytes, bwd_bytes = case.forward_traffic * itemsize * elements, case.backward_traffic * itemsize * elements
    row = {
        "case": case.name,
        "shape": list(case.shape),
        "bytes_per_element": {"forward": case.forward_traffic * itemsize, "backward": case.backward_traffic * itemsize},
        "forward_ms": _ms(ours.forward),
        "backward_ms": _ms(ours.backward),
        "forward_gbps": fwd_bytes / ours.forward / 1e9,
        "backward_gbps": bwd_bytes / ours.backward / 1e9,
        "total_ms": _ms(ours.total),
    }
    row["forward_pct_of_limit"] = 100 * row["forward_gbps"] / limit
    row["backward_pct_of_limit"] = 100 * row["backward_gbps"] / limit
    row["total_pct_of_limit"] = 100 * (fwd_bytes + bwd_bytes) / ours.total / 1e9 / limit
    row["best_total_ms"] = _ms(ours.best_total)
    row["best_total_pct_of_limit"] = 100 * (fwd_bytes + bwd_bytes) / ours.best_total / 1e9 / limit
    for other in ("numpy", "torch"):
        if other in times:
            row.update(_times_ms(times[other], f"{other}_"))
            row[f"{other}_best_total_ms"] = _ms(times[other].best_total)
            row[f"speedup_vs_{other}"] = times[other].total / ours.total
    return row


def _model_row(name: str, detail: str, result: dict[str, PassTimes] | str) -> dict:
    if isinstance(result, str):
        return {"case": name, "shape": detail, "available": False, "reason": result}
    ours = result["normlab"]
    row = {"case": name, "shape": detail, "available": True, **_times_ms(ours)}
    if "torch" in result:
        row.update(_times_ms(result["torch"], "torch_"), speedup_vs_torch=result["torch"].total / ours.total)
    return row


def run_bench(quick: bool = False, backend: str = "auto", seed: int = 0, threads: int | None = None) -> dict:
    """Measure everything `normlab bench` reports and return it as a JSON-ready dict.

    Inputs:
    - quick: small shapes and few repetitions (seconds, for tests); the figures then mean little.
    - backend: the normalization backend to measure ("auto", "numpy", "numba").
    - seed: of the random inputs.
    - threads: threads for the compiled kernels and for torch (default: numba's, every core).
    """
    backend = resolve_backend(backend)
    with _same_threads(backend, threads) as (count, torch):
        report = _measure(quick, backend, np.random.default_rng(seed), count, torch)
        report["threads"] = {"normlab": count, "torch": torch.get_num_threads() if torch is not None else None,
                             "blas": blas_threads()}
    return report


def _measure(quick: bool, backend: str, rng: np.random.Generator, threads: int, torch: ModuleType | None) -> dict:
    repeats = 3 if quick else 5
    burst = 1 if quick else 4  # timed passes per turn, back to back (see time_passes)
    settle = 0.001 if quick else SETTLE_SECONDS
    bandwidth = copy_bandwidth((16 if quick else 512) * MIB, repeats, threads)
    cases = QUICK_CASES if quick else FULL_CASES
    rows = [_norm_row(case, measure_norm(case, backend, torch, repeats, rng, settle, burst), bandwidth.limit)
            for case in cases]
    conv_shape, conv_filters = ((4, 8, 16, 16), 8) if quick else ((64, 64, 32, 32), 64)
    conv = measure_optional(lambda: conv2d_passes(torch, conv_shape, conv_filters, rng), repeats, settle, burst)
    rows.append(_model_row("conv2d 3x3", f"{conv_shape} -> {conv_filters} filters", conv))
    batch = 4 if quick else 128  # the batch of the issue's step target and of benchmarks/cnn_step_vs_torch.py
    step = measure_optional(lambda: cnn_step_passes(torch, batch, rng), repeats, settle, burst)
    rows.append(_model_row("bn-cnn training step", f"({batch}, 1, 28, 28)", step))
    return {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "numpy": np.__version__, "torch": getattr(torch, "__version__", None)},
        "backend": backend,
        "quick": quick,
        "repeats": repeats,
        "burst": burst,
        "settle_seconds": settle,
        "bandwidth_gbps": {**asdict(bandwidth), "limit": bandwidth.limit},
        "rows": rows,
    }


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_report(report: dict) -> str:
    """The report as a plain-text table."""
    bw, threads = report["bandwidth_gbps"], report["threads"]
    torch_version = report["machine"]["torch"]
    torch_threads = "no torch" if threads["torch"] is None else f"torch {torch_version} on {threads['torch']}"
    parallel = "-" if bw["parallel"] is None else f"{bw['parallel']:.1f}"
    quick = " (quick: small shapes, figures indicative only)" if report["quick"] else ""
    lines = [
        (f"normlab bench: backend {report['backend']} on {threads['normlab']} thread(s), {torch_threads} "
         f"thread(s); median of {report['repeats'] * report['burst']} runs{quick}"),
        (f"copy bandwidth (read + write): numpy 1 thread {bw['numpy_one_thread']:.1f} GB/s, "
         f"parallel {bw['threads']} threads {parallel} GB/s -> limit {bw['limit']:.1f} GB/s"),
        "",
        (f"{'case':<24}{'shape':<20}{'B/elt':>7}{'fwd ms':>9}{'bwd ms':>9}{'fwd GB/s':>10}{'bwd GB/s':>10}"
         f"{'% limit':>9}{'best %':>8}{'numpy ms':>10}{'torch ms':>10}{'x torch':>9}"),
    ]
    for row in report["rows"]:
        shape = "x".join(map(str, row["shape"])) if isinstance(row["shape"], list) else row["shape"]
        if "bytes_per_element" in row:
            b = row["bytes_per_element"]
            lines.append(
                f"{row['case']:<24}{shape:<20}{b['forward']:>3}/{b['backward']:<3}{row['forward_ms']:>9.2f}"
                f"{row['backward_ms']:>9.2f}{row['forward_gbps']:>10.1f}{row['backward_gbps']:>10.1f}"
                f"{row['total_pct_of_limit']:>8.0f}%{row['best_total_pct_of_limit']:>7.0f}%"
                f"{_fmt(row.get('numpy_total_ms'), '.2f'):>10}"
                f"{_fmt(row.get('torch_total_ms'), '.2f'):>10}{_fmt(row.get('speedup_vs_torch'), '.2f'):>9}"
            )
        elif not row["available"]:
            lines.append(f"{row['case']:<24}{shape[:19]:<20}  n/a (not available)")
        else:
            lines.append(
                f"{row['case']:<24}{shape[:19]:<20}{'':>7}{row['forward_ms']:>9.2f}{row['backward_ms']:>9.2f}"
                f"{'':>10}{'':>10}{'':>9}{'':>8}{'':>10}{_fmt(row.get('torch_total_ms'), '.2f'):>10}"
                f"{_fmt(row.get('speedup_vs_torch'), '.2f'):>9}"
            )
    lines += [
        "",
        "B/elt: least traffic per float32 element, forward/backward (batch norm reads x twice; layer and group",
        "norm keep a row in cache). % limit: forward + backward bytes / median time / copy limit; best %: the",
        "same for the fastest run. numpy and torch ms: forward + backward on NumPy and on torch's CPU kernels;",
        "x torch: torch time / normlab time (medians).",
        (f"Each turn starts after {report['settle_seconds']} s idle, so the thread pools of the turn before "
         f"(OpenBLAS, torch's OpenMP) have stopped spinning, then "
         + (f"runs {report['burst']} timed passes back to back after an untimed one." if report["burst"] > 1
            else "runs 1 timed pass.")),
    ]
    for row in report["rows"]:
        if not row.get("available", True):
            lines.append(f"{row['case']}: {row['reason']}")
    return "\n".join(lines)
