"""What `normlab check` found: per function, per case and per output, as text for a learner and as JSON
for an auto-grader (schema "normlab-check/1", documented in docs/check.md)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from normlab.check.compare import OutputCheck
from normlab.check.steps import FirstWrongStep, NodeMatch

SCHEMA = "normlab-check/1"


@dataclass
class CallCheck:
    """One call of a function: one step of one case."""

    case: str
    step: int
    mode: str  # "train" or "test"
    purpose: str  # what the case is for
    exception: str | None  # what the call raised (or returned instead of the expected tuple)
    outputs: list[OutputCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.exception is None and all(o.passed for o in self.outputs)


@dataclass
class GradientCheck:
    """The learner's backward against numerical gradients of the learner's own forward (main case)."""

    output: str  # "dx", "dgamma", "dbeta"
    passed: bool
    error: float | None
    threshold: float


@dataclass
class FunctionReport:
    """Everything about one function of the learner's file."""

    name: str
    family: str  # "cs231n-batchnorm", ...
    role: str  # "forward" or "backward"
    status: str  # "pass", "fail", "timeout", "crash" or "not run"
    message: str | None = None  # why it timed out, crashed or was not run
    calls: list[CallCheck] = field(default_factory=list)
    diagnoses: list[str] = field(default_factory=list)  # the distinct diagnoses, with the cases they came from
    verdict: str | None = None  # forward wrong, or backward not matching its own forward
    gradient_check: list[GradientCheck] = field(default_factory=list)
    first_wrong_step: FirstWrongStep | None = None
    first_wrong_case: str | None = None
    nodes: list[NodeMatch] = field(default_factory=list)  # the staged nodes found in its variables

    @property
    def passed(self) -> bool:
        return self.status == "pass"


@dataclass
class Report:
    """The whole check of one file."""

    file: str
    functions: list[FunctionReport]
    notes: list[str]
    seconds: float
    load_error: str | None = None

    @property
    def passed(self) -> bool:
        return self.load_error is None and bool(self.functions) and all(f.passed for f in self.functions)

    @property
    def exit_code(self) -> int:
        """0 when every function found passes, 1 when one fails, 2 when nothing could be checked."""
        if self.load_error is not None or not self.functions:
            return 2
        return 0 if self.passed else 1

    def to_dict(self) -> dict:
        """The JSON document (schema "normlab-check/1")."""
        return {
            "schema": SCHEMA, "file": self.file, "passed": self.passed, "exit_code": self.exit_code,
            "seconds": round(self.seconds, 3), "load_error": self.load_error, "notes": self.notes,
            "functions": [_function_dict(f) for f in self.functions],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False, default=_json_default)

    def to_text(self) -> str:
        lines = [f"normlab check {self.file}", ""]
        if self.load_error:
            return "\n".join([*lines, f"error: {self.load_error}", ""])
        lines += [f"note: {n}" for n in self.notes]
        if self.notes:
            lines.append("")
        for f in self.functions:
            lines += _render_function(f)
        if self.functions and self.functions[-1].passed:
            lines.append("")
        failed = [f.name for f in self.functions if not f.passed]
        if not self.functions:
            lines.append("nothing checked: no function with a name normlab check knows (see normlab check --help)")
        elif failed:
            lines.append(f"FAIL: {len(failed)} of {len(self.functions)} functions ({', '.join(failed)})")
        else:
            lines.append(f"PASS: all {len(self.functions)} functions")
        lines.append(f"({self.seconds:.1f} s; relative error ||got - expected|| / (||got|| + ||expected||))")
        return "\n".join(lines) + "\n"


def _json_default(value):
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _function_dict(f: FunctionReport) -> dict:
    step = None if f.first_wrong_step is None else {**_plain(f.first_wrong_step, "error"), "case": f.first_wrong_case}
    return {
        "name": f.name, "family": f.family, "role": f.role, "status": f.status, "passed": f.passed,
        "message": f.message, "verdict": f.verdict, "diagnoses": f.diagnoses,
        "calls": [{"case": c.case, "step": c.step, "mode": c.mode, "passed": c.passed, "exception": c.exception,
                   "outputs": _plain(c.outputs)} for c in f.calls],
        "gradient_check": _plain(f.gradient_check),
        "first_wrong_step": step,
        "nodes": _plain(f.nodes),
    }


def _plain(value, error_name: str = "relative_error"):
    """A report's dataclass as the JSON document has it: its fields in order, `error` named error_name, tuples
    as lists, numbers that are not finite as None."""
    if dataclasses.is_dataclass(value):
        return {error_name if f.name == "error" else f.name: _plain(getattr(value, f.name))
                for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return _finite(value) if isinstance(value, float) else value


# -- text ----------------------------------------------------------------------------------------------------

def _render_function(f: FunctionReport) -> list[str]:
    lines = [f"{f.name}  [{f.family}]  {f.status.upper()}"]
    if f.message:
        lines.append(f"  {f.message}")
    if f.passed:
        errors = [o.error for c in f.calls for o in c.outputs if o.error is not None]
        names = ", ".join(dict.fromkeys(o.name for c in f.calls for o in c.outputs))
        lines[0] += f"  ({names} on {len(f.calls)} calls; largest relative error {_number(max(errors, default=0.0))})"
        if f.verdict:
            lines.append(f"  => {f.verdict}")
        return lines
    if f.calls:
        names = list(dict.fromkeys(o.name for c in f.calls for o in c.outputs))
        width = max(len(_case_label(c)) for c in f.calls)
        lines.append("  " + " " * width + "  " + "".join(f"{n:<16}" for n in names))
        for c in f.calls:
            if c.exception:
                cells = f"raised {c.exception}"
            else:
                by_name = {o.name: o for o in c.outputs}
                cells = "".join(f"{_cell(by_name.get(n)):<16}" for n in names)
            lines.append(f"  {_case_label(c):<{width}}  {cells}".rstrip())
    for d in f.diagnoses:
        lines.append(f"  - {d}")
    if f.gradient_check:
        parts = ", ".join(f"{g.output} {'ok' if g.passed else 'differs'} ({_number(g.error)})"
                          for g in f.gradient_check)
        lines.append(f"  numerical gradient of your forward (main case) against this backward: {parts}")
    if f.verdict:
        lines.append(f"  => {f.verdict}")
    s = f.first_wrong_step
    if s is not None:
        lines.append(f"  first wrong step ({f.first_wrong_case} case): {s.node}"
                     + (f" (your variable `{s.variable}`)" if s.variable != s.node else ""))
        if s.formula:
            lines.append(f"    expected: {s.node} {s.shape} = {s.formula}")
        inputs = ", ".join(f"{m.node} {'right' if m.right else 'wrong' if m.right is False else 'not found'}"
                           + (f" (`{m.variable}`)" if m.variable and m.variable != m.node else "") for m in s.inputs)
        lines.append(f"    its inputs: {inputs}")
        lines.append(f"    expected {_values(s.expected)}   shape {s.shape}")
        lines.append(f"    got      {_values(s.got)}   shape {s.got_shape}   relative error {_number(s.error)}")
        for d in s.diagnoses:
            lines.append(f"    - {d}")
    lines.append("")
    return lines


def _case_label(c: CallCheck) -> str:
    return f"{c.case}" + (f" step {c.step + 1}" if c.step else "") + (" (test)" if c.mode == "test" else "")


def _cell(o: OutputCheck | None) -> str:
    if o is None:
        return "-"
    if o.error is None:
        return "FAIL shape" if o.shape is not None else "FAIL"
    return f"{'ok' if o.passed else 'FAIL'} {_number(o.error)}"


def _number(v: float | None) -> str:
    return "n/a" if v is None else ("nan" if math.isnan(v) else f"{v:.1e}")


def _values(values: list[float]) -> str:
    return "[" + ", ".join(f"{v: .6g}" for v in values) + (", ...]" if values else "]")
