"""`check_file`: load a learner's file, run its normalization layers on the cases, compare every output
with normlab's functional core, and explain what is wrong."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import numpy as np

from normlab.check.cases import Case, build_cases
from normlab.check.compare import MATCH, THRESHOLD, OutputCheck, compare_output, same_values
from normlab.check.families import KNOWN_NAMES, Family, find_families
from normlab.check.formulas import graph_formulas
from normlab.check.mistakes import BY_KEY, CATALOGUE, Mistake, words_for
from normlab.check.report import CallCheck, FunctionReport, GradientCheck, Report
from normlab.check.runner import Child, LoadError, Stopped, load_module, run_family, signatures
from normlab.check.simulate import layout, reference, simulate
from normlab.check.steps import first_wrong_step

GRADCHECK_THRESHOLD = 1e-6  # numerical gradients carry their own error (about 1e-10 here)


def check_file(path, *, timeout: float = 10.0, isolate: bool = True, seed: int = 0,
               threshold: float = THRESHOLD) -> Report:
    """Check the normalization layers defined in a Python file.

    Inputs:
    - path: the learner's file (e.g. cs231n/layers.py). Functions are found by name: CS231n assignment 2's
      batchnorm_forward, batchnorm_backward, batchnorm_backward_alt, layernorm_forward/backward,
      spatial_batchnorm_forward/backward, spatial_groupnorm_forward/backward, or normlab.functional's
      batchnorm_forward, layernorm_forward, groupnorm_forward and their backward functions.
    - timeout: seconds one call of a learner's function may take (isolate=True only).
    - isolate: run the learner's code in a child process (a timeout and a crash end only the child); False
      runs it in this process.
    - seed: of the cases' random draws.
    - threshold: largest relative error that passes.

    Returns a Report (`.passed`, `.exit_code`, `.to_text()`, `.to_json()`).
    """
    shown, path = str(path), Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FILE must be an existing Python file, got {str(path)!r} (no such file)")
    if not 0 < timeout < math.inf:  # NaN fails too
        raise ValueError(f"timeout must be a positive, finite number of seconds, got {timeout}")
    path = path.resolve()
    start = time.perf_counter()
    child = Child(path, timeout) if isolate else None
    try:
        try:
            if child is not None:
                found = child.start()
            else:
                module = load_module(path)
                found = signatures(module)
        except LoadError as error:
            return Report(shown, [], [], time.perf_counter() - start, load_error=str(error))
        except Stopped as stopped:
            return Report(shown, [], [], time.perf_counter() - start,
                          load_error=f"importing {path.name} {stopped.reason}")
        families, notes = find_families(found)
        if not families:
            notes.append(f"none of these functions is defined: {', '.join(KNOWN_NAMES)}")
        functions = []
        for family in families:
            cases = build_cases(family, seed)
            if child is not None:
                raw, stopped = _run_isolated(child, family, cases)
            else:
                raw, stopped = run_family(module, family, cases, frozenset(), lambda f, c: None, path), {}
            present = [b for b in family.backwards if b in found]
            functions += analyse(family, cases, raw, stopped, present, threshold)
        return Report(shown, functions, notes, time.perf_counter() - start)
    finally:
        if child is not None:
            child.close()


def _run_isolated(child: Child, family: Family, cases: list[Case]) -> tuple[dict | None, dict[str, Stopped]]:
    """Run a family in the child; a backward that times out or crashes is left out and the rest run again."""
    stopped: dict[str, Stopped] = {}
    while True:
        try:
            return child.run(family, cases, frozenset(stopped)), stopped
        except Stopped as s:
            stopped[s.function or family.forward] = s
            if s.function in (None, family.forward):
                return None, stopped


def analyse(family: Family, cases: list[Case], raw: dict | None, stopped: dict[str, Stopped],
            backwards: list[str], threshold: float) -> list[FunctionReport]:
    """Turn the raw outputs of a family's calls into one report per function."""
    context = _Context(family, cases, threshold)
    reports = []
    for name in [family.forward, *backwards]:
        role = "forward" if name == family.forward else "backward"
        if raw is None and role == "backward":
            reports.append(FunctionReport(name, family.key, role, "not run",
                                          f"not run: its forward {family.forward} did not return"))
            continue
        if name in stopped:  # the forward is when raw is None
            s = stopped[name]
            reports.append(FunctionReport(name, family.key, role, s.kind, f"{name} {s.reason} (case {s.case})"))
            continue
        report = FunctionReport(name, family.key, role, "pass")
        for case in cases:
            for k, step in enumerate(case.steps):
                entry = raw["steps"][case.name][k]
                key = "forward" if role == "forward" else name
                if key not in entry:
                    continue  # a backward after a test step, or after a forward that raised
                report.calls.append(context.call_check(case, k, entry[key], role))
        context.drop_coincidences(report.calls)
        if role == "backward" and not report.calls:
            report.status, report.message = "not run", f"not run: {family.forward} raised on every training step"
        elif not all(c.passed for c in report.calls):
            report.status = "fail"
        report.diagnoses = _distinct_diagnoses(report.calls)
        reports.append(report)
    forward_report = reports[0]
    for report in reports:
        if report.role == "backward" and report.calls and raw.get("numeric") and "error" not in raw["numeric"]:
            context.gradient_check(report, raw, forward_report)
        if report.status == "fail":
            # A backward's forward values (unpacked from the cache) are the forward's report when that fails too.
            context.first_wrong_step(report, raw,
                                     skip_forward_nodes=report.role == "backward" and not forward_report.passed)
    return reports


def _distinct_diagnoses(calls: list[CallCheck]) -> list[str]:
    """Each distinct diagnosis once, with the cases it came from ("every case" when all of them)."""
    seen: dict[str, tuple[str, list[str]]] = {}  # the text without its numbers -> (first text, cases)
    for c in calls:
        texts = [c.exception] if c.exception else [d for o in c.outputs for d in o.diagnoses]
        for t in texts:
            label = c.case + (f" step {c.step + 1}" if c.step else "")
            _, where = seen.setdefault(re.sub(r"\d+", "#", t), (t, []))
            if label not in where:
                where.append(label)
    failed = sum(not c.passed for c in calls)

    def cases(where: list[str]) -> str:
        if len(where) == len(calls) > 1:
            return "every case"
        return "every failing case" if len(where) == failed > 2 else ", ".join(where)

    return [f"{t}  [{cases(where)}]" for t, where in seen.values()]


def _swapped(name: str, got: np.ndarray, expected: dict[str, np.ndarray]) -> list[str]:
    """An output equal to another expected output: returned in the wrong order."""
    found = []
    for other, value in expected.items():
        if other != name and got.shape == value.shape and same_values(got, value) <= MATCH:
            found.append(f"{name} equals the expected {other}: the outputs are returned in the wrong order?")
    return found


class _Context:
    """The reference outputs of a family's cases, and the mistakes' outputs, computed on first need."""

    def __init__(self, family: Family, cases: list[Case], threshold: float):
        self.family, self.threshold = family, threshold
        self.cases = {c.name: c for c in cases}
        self.words = words_for(family.kind, family.convention)
        self.mistakes = [m for m in CATALOGUE if family.kind in m.kinds]
        self.reference = {c.name: reference(family, c) for c in cases}
        self._simulated: dict[tuple[str, str | None], list] = {}

    def simulated(self, case: Case, mistake: Mistake | None) -> list[dict]:
        key = (case.name, None if mistake is None else mistake.key)
        if key not in self._simulated:
            self._simulated[key] = simulate(self.family, case, mistake)
        return self._simulated[key]

    def call_check(self, case: Case, k: int, call: dict, role: str) -> CallCheck:
        step = case.steps[k]
        check = CallCheck(case.name, k, step.mode, case.purpose, call["error"])
        if call["error"] is not None:
            return check
        expected = self.reference[case.name][k]
        names = ("out", "running_mean", "running_var") if role == "forward" else ("dx", "dgamma", "dbeta")
        for name in names:
            if name not in expected:
                continue
            param = name in ("dgamma", "dbeta")
            summed = self._param_axes(step.x.ndim) if param else None
            group = self._group(case, step.x.shape, param)
            output = compare_output(name, call["outputs"][name], expected[name], self.threshold, summed, group)
            if not output.passed and not isinstance(call["outputs"][name], str):
                self._diagnose(output, call["outputs"][name], case, k, name)
                output.diagnoses.extend(_swapped(name, call["outputs"][name], expected))
            check.outputs.append(output)
        return check

    def _param_axes(self, ndim: int) -> tuple[int, ...]:
        return (0,) if ndim == 2 else (0, 2, 3)

    def _group(self, case: Case, shape: tuple[int, ...], param: bool) -> int:
        """M: how many values a parameter gradient sums (param) or a statistic averages."""
        if param:
            return int(np.prod([shape[a] for a in self._param_axes(len(shape))]))
        lay = layout(self.family, shape, case.groups)
        return int(np.prod([lay.internal[a] for a in lay.stat_axes]))

    def _diagnose(self, output: OutputCheck, got: np.ndarray, case: Case, k: int, name: str) -> None:
        """Add the diagnosis of every catalogued mistake whose output this one equals."""
        expected = self.reference[case.name][k][name]
        found = []
        for mistake in self.mistakes:
            steps = self.simulated(case, mistake)
            simulated = steps[k]["outputs"].get(name) if k < len(steps) else None
            if simulated is None:
                continue
            off = same_values(simulated, expected)
            if off is None or off <= MATCH:
                continue  # this mistake does not change this output
            error = same_values(got, simulated)
            if error is not None and error <= MATCH:
                found.append(mistake)
        output.mistakes = [m.key for m in found]
        if found:  # the catalogue's words say more than the pattern's ("is 1/4 of the expected value")
            output.diagnoses = [d for d in output.diagnoses if " has dtype " in d]
        output.diagnoses[:0] = [f"{name}: {m.describe(self.words)}" for m in found]

    def drop_coincidences(self, calls: list[CallCheck]) -> None:
        """Keep, for each output, the mistakes that explain it in every call where one explains it, when there
        are such: with N = 2 a missing 1/N is also a missing 1/2, and only the first is the learner's."""
        failing: dict[str, list[OutputCheck]] = {}
        for c in calls:
            for o in c.outputs:
                if o.mistakes:
                    failing.setdefault(o.name, []).append(o)
        for name, outputs in failing.items():
            everywhere = set.intersection(*(set(o.mistakes) for o in outputs))
            if not everywhere:
                continue
            for o in outputs:
                dropped = {f"{name}: {BY_KEY[k].describe(self.words)}" for k in o.mistakes if k not in everywhere}
                o.mistakes = [k for k in o.mistakes if k in everywhere]
                o.diagnoses = [d for d in o.diagnoses if d not in dropped]

    def first_wrong_step(self, report: FunctionReport, raw: dict, skip_forward_nodes: bool = False) -> None:
        """The first wrong node of the staged graph, on the first call that failed and captured variables."""
        backward = report.role == "backward"
        for call in report.calls:
            if call.passed or call.exception:
                continue
            case = self.cases[call.case]
            entry = raw["steps"][case.name][call.step]
            variables = entry["forward" if not backward else report.name]["locals"]
            if not variables:
                continue
            nodes = self._nodes(case, call.step, None)
            mutants = {m.key: self._nodes(case, call.step, m) for m in self.mistakes if m.flags}
            words = {m.key: m.describe(self.words) for m in self.mistakes}
            step, matches = first_wrong_step(variables, nodes, backward, self._formulas(case, call.step), mutants,
                                             words, self._group(case, case.steps[call.step].x.shape, False),
                                             skip_forward_nodes)
            report.nodes = [m for m in matches.values() if m.variable is not None and m.node not in nodes["_given"]]
            if step is not None:
                report.first_wrong_step, report.first_wrong_case = step, case.name
            return

    def _nodes(self, case: Case, k: int, mistake: Mistake | None) -> dict:
        step = case.steps[k]
        nodes = dict(self.simulated(case, mistake)[k]["nodes"])
        lay = layout(self.family, step.x.shape, case.groups)
        given = {"x": step.x.reshape(lay.internal), "gamma": case.gamma.reshape(lay.param_internal),
                 "beta": case.beta.reshape(lay.param_internal)}
        if step.dout is not None:
            given["dout"] = step.dout.reshape(lay.internal)
        nodes.update(given)
        nodes["_given"] = tuple(given)
        return nodes

    def _formulas(self, case: Case, k: int) -> dict[str, str]:
        step = case.steps[k]
        return graph_formulas(self.family.kind, step.x, case.gamma, case.beta, case.eps, case.groups,
                              constant=step.mode == "test")

    def gradient_check(self, report: FunctionReport, raw: dict, forward: FunctionReport) -> None:
        """The backward's gradients against numerical gradients of the learner's own forward (main case)."""
        main = next(iter(self.cases.values()))
        call = raw["steps"][main.name][0].get(report.name)
        if call is None or call["error"] is not None:
            return
        for output, wrt in (("dx", "x"), ("dgamma", "gamma"), ("dbeta", "beta")):
            got = call["outputs"][output]
            error = None if isinstance(got, str) else same_values(got, raw["numeric"][wrt])
            report.gradient_check.append(GradientCheck(output, error is not None and error <= GRADCHECK_THRESHOLD,
                                                       error, GRADCHECK_THRESHOLD))
        consistent = all(g.passed for g in report.gradient_check)
        # The backward depends on the forward's out only (not on its running statistics).
        forward_main_ok = bool(forward.calls) and forward.calls[0].exception is None and all(
            o.passed for o in forward.calls[0].outputs if o.name == "out")
        if report.passed:
            if not consistent:
                report.verdict = (f"this backward is right, so it cannot match your {forward.name}, which is wrong")
        elif consistent and not forward_main_ok:
            report.verdict = (f"this backward matches your {forward.name} numerically, and {forward.name} is wrong: "
                              "fix the forward first")
        elif consistent:
            report.verdict = ("its values match the numerical gradient of your forward on the main case: what fails "
                              "is listed above (a shape, or another case)")
        elif forward_main_ok:
            wrong = ", ".join(g.output for g in report.gradient_check if not g.passed)
            report.verdict = (f"your forward is right and this backward does not match it ({wrong}): the mistake is "
                              "in the backward")
        else:
            report.verdict = "the forward is wrong, and this backward does not match it either"
