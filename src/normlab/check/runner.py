"""Running the learner's code: loading the file, calling its functions on the cases, and the child
process that does both so that an infinite loop ends with a message and a crash ends only the child.

The child loads the file once and runs one family at a time. Before every call of a learner's function it
tells the parent which function on which case; the parent waits at most `timeout` seconds for the next
word, and otherwise ends the child and reports the function that did not return. Only NumPy arrays, numbers
and strings come back: the learner's caches and objects stay in the child.

`run_family` is what the child runs; `isolate=False` runs it in this process (no timeout), as the tests do
where the timeout is not what they check.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import multiprocessing
import sys
import traceback
import warnings
from functools import partial
from pathlib import Path

import numpy as np

from normlab.check.cases import Case
from normlab.check.families import BY_KEY, KNOWN_NAMES, Family, forward_call, initial_state, positional_parameters


class LoadError(Exception):
    """The learner's file could not be imported (the message says why)."""


def load_module(path: Path):
    """Import the learner's file as a fresh module (its folder first on sys.path, for its own imports)."""
    spec = importlib.util.spec_from_file_location(f"normlab_check_user_{abs(hash(str(path)))}", path)
    if spec is None or spec.loader is None:
        raise LoadError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        with _quiet():
            spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 (the learner's module may raise anything: it is reported)
        raise LoadError(f"importing {path} raised {_describe(error, path)}") from None
    finally:
        sys.path.remove(str(path.parent))
    return module


def signatures(module) -> dict[str, list[str] | None]:
    """{name: positional parameter names} of the functions `normlab check` knows that the module defines."""
    return {name: positional_parameters(getattr(module, name)) for name in KNOWN_NAMES
            if callable(getattr(module, name, None))}


def run_family(module, family: Family, cases: list[Case], skip: frozenset[str], notify, path: Path) -> dict:
    """Call the family's forward on every step of every case and each backward after every training step.

    Inputs:
    - module: the learner's module; cases: from `build_cases`, the first the main one.
    - skip: backward functions not to call (one that timed out before).
    - notify(function, case): called before every call of a learner's function.

    Returns plain data: {"steps": {case name: [per step {"forward": call, backward name: call}]},
    "numeric": {"x"|"gamma"|"beta": array} or {"error": text}}, each call {"outputs": {...}, "error": text or
    None, "locals": {name: array}}.
    """
    forward = getattr(module, family.forward)
    backwards = [b for b in family.backwards if callable(getattr(module, b, None)) and b not in skip]
    result: dict = {"steps": {}, "numeric": None}
    for case in cases:
        state = initial_state(family, case)
        steps = []
        for k, step in enumerate(case.steps):
            notify(family.forward, case.name)
            call = partial(forward_call, family, forward, case, step.x.copy(), step.mode, state)
            value, error, local = _invoke(forward, call, path)
            entry = {"forward": _forward_outputs(family, value, error, local, state)}
            cache = value[1] if entry["forward"]["error"] is None else None
            if step.mode == "train" and entry["forward"]["error"] is None:
                for name in backwards:
                    function = getattr(module, name)
                    notify(name, case.name)
                    own = _copy(cache)
                    value, error, local = _invoke(function, partial(function, step.dout.copy(), own), path)
                    entry[name] = _backward_outputs(value, error, local)
            steps.append(entry)
        result["steps"][case.name] = steps
    main, first = cases[0], cases[0].steps[0]
    if backwards and first.mode == "train" and result["steps"][main.name][0]["forward"]["error"] is None:
        result["numeric"] = _numeric(family, forward, main, path, notify)
    return result


def _numeric(family: Family, forward, case: Case, path: Path, notify) -> dict:
    """The gradient of sum(forward(x, gamma, beta)[0] * dout) by centered differences, for the main step;
    notify(function, case) before each of the forward's calls, so the timeout applies to each."""
    from normlab.gradcheck import numerical_gradient

    step = case.steps[0]
    inputs = {"x": step.x, "gamma": case.gamma, "beta": case.beta}
    grads = {}
    for name, value in inputs.items():

        def f(v, name=name):
            notify(family.forward, f"{case.name} (numerical gradient)")
            args = {**{k: a.copy() for k, a in inputs.items()}, name: v.copy()}  # the learner may write into x
            out = forward_call(family, forward, case, args["x"], "train", initial_state(family, case),
                               args["gamma"], args["beta"])[0]
            return np.asarray(out, dtype=np.float64)

        try:
            with _quiet():
                grads[name] = numerical_gradient(f, value.copy(), step.dout)
        except Exception as error:  # noqa: BLE001 (the learner's forward: reported)
            return {"error": _describe(error, path)}
    return grads


def _invoke(function, thunk, path: Path):
    """Run thunk() (a call of `function`); returns (value, error text or None, the function's local arrays
    as it returned)."""
    code = getattr(function, "__code__", None)
    captured: dict = {}

    def profiler(frame, event, arg):
        if event == "return" and frame.f_code is code:
            captured.clear()  # the outermost return of the function comes last
            captured.update(arrays_in(frame.f_locals))

    previous = sys.getprofile()
    if code is not None:
        sys.setprofile(profiler)
    try:
        with _quiet():
            value = thunk()
        error = None
    except Exception as exc:  # noqa: BLE001 (the learner's function: reported)
        value, error = None, _describe(exc, path)
    finally:
        sys.setprofile(previous)
    return value, error, captured


def arrays_in(variables: dict) -> dict[str, np.ndarray]:
    """The floating-point arrays and numbers among a frame's variables, copied; tuples, lists and dicts
    (a cache) opened one level: cache[2], cache['xhat']."""
    found = {}
    for name, value in variables.items():
        items = [(name, value)]
        if isinstance(value, (tuple, list)):
            items += [(f"{name}[{k}]", v) for k, v in enumerate(value)]
        elif isinstance(value, dict):
            items += [(f"{name}[{k!r}]", v) for k, v in value.items() if isinstance(k, str)]
        for key, v in items:
            array = _float_array(v)
            if array is not None:
                found[key] = array
    return found


def _float_array(v) -> np.ndarray | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (np.ndarray, np.generic, float)):
        array = np.array(v, copy=True)
        return array if np.issubdtype(array.dtype, np.floating) else None
    return None


def _plain(v):
    """An output as an array, or a string saying what it is instead."""
    array = _float_array(v)
    if array is not None:
        return array
    if isinstance(v, np.ndarray):
        return f"an array of dtype {v.dtype}"
    return "None" if v is None else f"a {type(v).__name__}"


def _forward_outputs(family: Family, value, error, local, state) -> dict:
    outputs = {}
    if error is None and not (isinstance(value, tuple) and len(value) == 2):
        error = f"returned {_what(value)}; expected the pair (out, cache)"
    if error is None:
        outputs["out"] = _plain(value[0])
        if family.has_running_stats:
            outputs["running_mean"] = _plain(state.get("running_mean"))
            outputs["running_var"] = _plain(state.get("running_var"))
    return {"outputs": outputs, "error": error, "locals": local}


def _backward_outputs(value, error, local) -> dict:
    outputs = {}
    if error is None and not (isinstance(value, (tuple, list)) and len(value) == 3):
        error = f"returned {_what(value)}; expected (dx, dgamma, dbeta)"
    if error is None:
        outputs = {name: _plain(v) for name, v in zip(("dx", "dgamma", "dbeta"), value)}
    return {"outputs": outputs, "error": error, "locals": local}


def _what(value) -> str:
    """What a function returned, in words: "a tuple of 2", "an array", "None"."""
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    plain = _plain(value)
    return "an array" if isinstance(plain, np.ndarray) else plain


def _copy(cache):
    """A deep copy of the cache, so one backward cannot change what the next one sees (as is where it
    cannot be copied)."""
    try:
        return copy.deepcopy(cache)
    except Exception:  # noqa: BLE001 (whatever the learner's cache holds)
        return cache


@contextlib.contextmanager
def _quiet():
    """The learner's prints and NumPy's warnings stay out of the report (a NaN shows in the values)."""
    with contextlib.redirect_stdout(io.StringIO()), np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _describe(error: BaseException, path: Path) -> str:
    """`ValueError: ... (layers.py line 12, in batchnorm_forward: mu = x.mean(axis=0))`: the error and the
    last line of the learner's file it passed through."""
    text = "".join(traceback.format_exception_only(type(error), error)).strip()
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename) == path]
    if frames:
        f = frames[-1]
        text += f" ({path.name} line {f.lineno}, in {f.name}: {f.line})"
    return text


# -- the child process ---------------------------------------------------------------------------------------

def _child_main(conn, path: str) -> None:
    path = Path(path)
    try:
        module = load_module(path)
    except LoadError as error:
        conn.send(("load_error", str(error)))
        return
    conn.send(("loaded", signatures(module)))
    while True:
        task = conn.recv()
        if task is None:
            return
        key, cases, skip = task
        result = run_family(module, BY_KEY[key], cases, skip, lambda f, c: conn.send(("call", f, c)), path)
        conn.send(("done", result))


class Stopped(Exception):
    """The child ended without an answer: `function` on `case` timed out or crashed (`reason`)."""

    def __init__(self, function: str | None, case: str | None, reason: str, kind: str):
        super().__init__(reason)
        self.function, self.case, self.reason, self.kind = function, case, reason, kind  # kind: timeout|crash


class Child:
    """The child process, started on first use and again after it was ended."""

    def __init__(self, path: Path, timeout: float):
        self.path, self.timeout = path, timeout
        self.process = None
        self.conn = None

    def start(self) -> dict:
        """Start the child; returns the file's signatures (raises LoadError, Stopped)."""
        context = multiprocessing.get_context("spawn")
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(target=_child_main, args=(child_conn, str(self.path)), daemon=True)
        self.process.start()
        child_conn.close()
        # Importing NumPy in a new interpreter takes a while on a busy machine: at least 30 s for that.
        kind, payload = self._receive(max(self.timeout, 30.0), None, None)
        if kind == "load_error":
            self.stop()
            raise LoadError(payload)
        return payload

    def run(self, family: Family, cases: list[Case], skip: frozenset[str]) -> dict:
        if self.process is None:
            self.start()
        self.conn.send((family.key, cases, skip))
        function = case = None
        while True:
            kind, *payload = self._receive(self.timeout, function, case)
            if kind == "done":
                return payload[0]
            function, case = payload

    def _receive(self, timeout: float, function, case):
        if not self.conn.poll(timeout):
            self.stop()
            raise Stopped(function, case, f"did not return within {timeout:g} s (an infinite loop?)", "timeout")
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            self.process.join(5)
            code = self.process.exitcode
            self.stop()
            raise Stopped(function, case, f"ended the process running it (exit code {code})", "crash") from None

    def stop(self) -> None:
        if self.process is not None:
            if self.process.is_alive():
                self.process.kill()
            self.process.join(5)
            self.conn.close()
        self.process = self.conn = None

    def close(self) -> None:
        if self.process is not None and self.process.is_alive():
            try:
                self.conn.send(None)
                self.process.join(5)
            except (OSError, BrokenPipeError):
                pass
        self.stop()
