"""A reverse-mode automatic differentiation engine over NumPy arrays, in the manner of micrograd.

A `Tensor` holds an array (`data`), the gradient of the last `backward()` with respect to it (`grad`),
the tensors it was computed from (`parents`) and the operation that made it. Every operation below
computes its result and, right beside it, how the gradient flows back to each operand: the local
gradient times the upstream gradient `out.grad`, summed over any axes the forward broadcast.
`backward()` is a topological sort and a loop over them.

Each local gradient is written once, as the text a graph shows (`normlab.autograd.steps`): a template in
which {a} and {b} name the operands, {out} the result, {g} the upstream gradient, and other names the
operation's parameters ("{b} * {g}", "0.5 / {out} * {g}", "{g} @ {b}.T"). The numbers are that same text
evaluated with NumPy on the operands' arrays (`_evaluate`): the gradient's share for each operand
(`vjps`, which `backward()` loops over) and, where the share is a factor times the upstream gradient
(elementwise operations and reductions), the factor alone (`local_factors`, what the interactive page
shows beside the upstream gradient).

A Python number in an operation (the eps in `var + eps`) is a parameter of that operation, not a node;
a NumPy array becomes a constant leaf that receives no gradient.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import cache
from numbers import Real
from types import CodeType

import numpy as np

Axes = tuple[int, ...]
Factor = Callable[[], "float | np.ndarray"]  # an elementwise local gradient, computed when asked for
Vjp = Callable[[np.ndarray], np.ndarray]  # upstream gradient -> an operand's share of it
# The functions a local gradient's text may call, as NumPy computes them.
_FUNCTIONS = {name: getattr(np, name) for name in ("sqrt", "exp", "log", "reshape", "expand_dims")}
_FUNCTIONS["__builtins__"] = {}


class Tensor:
    """A node of the computational graph.

    Inputs:
    - data: a floating-point array (or anything `numpy.asarray` makes one of); its dtype is kept.
    - name: how graphs, pictures and `explain` call this node (e.g. "xhat").
    - requires_grad: False for constants, which receive no gradient.
    """

    # An ndarray on the left of + - * / @ hands the operation to the Tensor on the right.
    __array_ufunc__ = None

    def __init__(self, data, name: str | None = None, *, requires_grad: bool = True):
        data = np.asarray(data)
        if not np.issubdtype(data.dtype, np.floating):
            raise TypeError(f"data must have a floating-point dtype (float32 or float64), got {data.dtype}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {type(name).__name__}")
        self.data = data
        self.grad: np.ndarray | None = None
        self.name = name
        self.requires_grad = bool(requires_grad)
        self.parents: tuple[Tensor, ...] = ()
        # How this tensor was made, as text: see the module docstring. None for a leaf.
        self.expression: str | None = None
        self.local_gradients: tuple[str, ...] = ()  # one template per parent
        self.broadcast_axes: tuple[Axes, ...] = ()  # per parent: axes of this tensor its gradient sums over
        # Per parent: the local gradient of an elementwise operation (None otherwise), and upstream ->
        # that parent's share of the gradient. See _result.
        self.local_factors: tuple[Factor | None, ...] = ()
        self.vjps: tuple[Vjp, ...] = ()
        self.elementwise = False

    # -- plumbing shared by the operations -------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def named(self, name: str) -> Tensor:
        """Give this tensor a name and return it: `mu = x.mean(axis=0, keepdims=True).named("mu")`."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, got {name!r}")
        self.name = name
        return self

    def __repr__(self) -> str:
        made = "leaf" if self.expression is None else f"expression={self.expression!r}"
        return f"Tensor(name={self.name!r}, shape={self.shape}, dtype={self.dtype}, {made})"

    def _result(self, data, parents: tuple[Tensor, ...], expression: str, shares: tuple[str, ...], *,
                factors: tuple[str | None, ...] = (), params: Mapping[str, object] | None = None,
                elementwise: bool = False, spread: bool = False,
                broadcast_axes: tuple[Axes, ...] | None = None) -> Tensor:
        """The result of an operation on `parents`.

        - shares: per parent, its share of the gradient as a template ({g} the upstream gradient), before
          the sum over broadcast axes: the text the graph shows and, evaluated, the vjp.
        - factors: per parent, the local gradient when the share is it times the upstream gradient (a
          template that evaluates to a number or an array broadcasting against the result), else None (or
          no factors at all).
        - params: the values of the templates' other names; the texts show numbers as `_number` writes
          them, the gradients compute with the exact values.
        - elementwise: the share is the factor times the upstream gradient, element by element; the parents
          may broadcast against each other (broadcast_axes are worked out).
        - spread: the share is put back over the parent's shape (a reduction's backward).
        """
        params = dict(params or {})
        out = Tensor(data, requires_grad=any(p.requires_grad for p in parents))
        out.parents = parents
        out.expression = expression
        out.local_gradients = tuple(_text(t, params) for t in shares)
        if broadcast_axes is None:
            broadcast_axes = tuple(_broadcast_axes(p.shape, out.shape) if elementwise else () for p in parents)
        out.broadcast_axes = broadcast_axes

        def values(g=None) -> dict[str, object]:  # what the templates' names stand for
            return {**params, "a": parents[0].data, "b": parents[-1].data, "out": out.data, "g": g}

        def factor(template: str) -> Factor:
            return lambda: _evaluate(template, values(), as_float=True)

        def vjp(template: str, shape: tuple[int, ...]) -> Vjp:
            if spread:
                return lambda g: np.broadcast_to(_evaluate(template, values(g)), shape)
            return lambda g: _evaluate(template, values(g))

        out.local_factors = tuple(None if f is None else factor(f) for f in factors or (None,) * len(parents))
        out.vjps = tuple(vjp(t, p.shape) for t, p in zip(shares, parents))
        out.elementwise = elementwise
        return out

    def _elementwise(self, data, parents: tuple[Tensor, ...], expression: str, factors: tuple[str, ...],
                     params: Mapping[str, object] | None = None) -> Tensor:
        """An elementwise operation: per parent, its local gradient `factors` (d out / d parent element by
        element, a template); the share of the gradient is that times the upstream gradient."""
        shares = tuple(f"{f} * {{g}}" for f in factors)
        return self._result(data, parents, expression, shares, factors=factors, params=params, elementwise=True)

    def _binary(self, other, op: str) -> Tensor:
        """self <op> other for a Tensor or array `other`: the operands broadcast (see _BINARY)."""
        other = _as_tensor(other, op)
        forward, factors = _BINARY[op]
        return self._elementwise(forward(self.data, other.data), (self, other), f"{{a}} {op} {{b}}", factors)

    def _accumulate(self, grad: np.ndarray) -> None:
        """Add `grad` to this tensor's gradient, summed back to this tensor's shape first."""
        if not self.requires_grad:
            return
        grad = _unbroadcast(grad, self.shape)
        # Never in place: the first gradient may be the consumer's own array.
        self.grad = grad if self.grad is None else self.grad + grad

    # ----------------------------------------------------------------------------------------------
    # Elementwise arithmetic. Operands broadcast; the backward sums over the broadcast axes. Each
    # operation gives, per operand, its local gradient: the chain rule multiplies that by the upstream
    # gradient.

    def __add__(self, other) -> Tensor:
        if _is_number(other):
            text = f"{{a}} + {_number(other)}" if other >= 0 else f"{{a}} - {_number(-other)}"
            return self._elementwise(self.data + other, (self,), text, ("1",))
        return self._binary(other, "+")

    def __radd__(self, other) -> Tensor:
        return self + other if _is_number(other) else _as_tensor(other, "+") + self

    def __sub__(self, other) -> Tensor:
        if _is_number(other):
            return self + (-other)
        return self._binary(other, "-")

    def __rsub__(self, other) -> Tensor:
        if _is_number(other):
            return self._elementwise(other - self.data, (self,), f"{_number(other)} - {{a}}", ("-1",))
        return _as_tensor(other, "-") - self

    def __neg__(self) -> Tensor:
        return self._elementwise(-self.data, (self,), "-{a}", ("-1",))

    def __mul__(self, other) -> Tensor:
        if _is_number(other):
            return self._elementwise(self.data * other, (self,), f"{_number(other)} * {{a}}", ("{c}",), {"c": other})
        return self._binary(other, "*")

    def __rmul__(self, other) -> Tensor:
        return self * other if _is_number(other) else _as_tensor(other, "*") * self

    def __truediv__(self, other) -> Tensor:
        if _is_number(other):
            text = f"{{a}} / {_number(other)}"
            return self._elementwise(self.data / other, (self,), text, ("1 / {c}",), {"c": other})
        return self._binary(other, "/")

    def __rtruediv__(self, other) -> Tensor:
        if _is_number(other):
            # c / a as one node (ivar = 1 / sqrtvar), not c * a**-1: the staged graph has one step here.
            text = f"{_number(other)} / {{a}}"
            return self._elementwise(other / self.data, (self,), text, ("{minus_c} / {a}**2",), {"minus_c": -other})
        return _as_tensor(other, "/") / self

    def __pow__(self, exponent) -> Tensor:
        if not _is_number(exponent):
            raise TypeError(f"exponent must be a Python number, got {type(exponent).__name__}")
        p = exponent
        local = {1: "{p} * {a}", 0: "1"}.get(p - 1, "{p} * {a}**{q}")  # q = p - 1
        return self._elementwise(self.data**p, (self,), f"{{a}}**{_number(p)}", (local,), {"p": p, "q": p - 1})

    # -- elementwise functions. A local gradient may read the result ({out}), computed by then. --------------

    def sqrt(self) -> Tensor:
        return self._elementwise(np.sqrt(self.data), (self,), "sqrt({a})", ("0.5 / {out}",))

    def exp(self) -> Tensor:
        return self._elementwise(np.exp(self.data), (self,), "exp({a})", ("{out}",))

    def log(self) -> Tensor:
        return self._elementwise(np.log(self.data), (self,), "log({a})", ("1 / {a}",))

    # -- reductions. The backward spreads the upstream gradient back over the reduced axes. ------------------

    def sum(self, axis: int | Axes | None = None, keepdims: bool = False) -> Tensor:
        return self._reduce("sum", axis, keepdims, "1", {})

    def mean(self, axis: int | Axes | None = None, keepdims: bool = False) -> Tensor:
        m = int(np.prod([self.shape[a] for a in _normalize_axes(axis, self.ndim)], dtype=np.int64))
        if m == 0:
            raise ValueError(f"mean over axis={axis} of a tensor of shape {self.shape}: no elements")
        return self._reduce("mean", axis, keepdims, "1/{m}", {"m": m})

    def _reduce(self, op: str, axis, keepdims: bool, factor: str, params: dict[str, object]) -> Tensor:
        """ndarray.sum or .mean over `axis`, whose local gradient is `factor` for every element."""
        axes = _normalize_axes(axis, self.ndim)
        data = getattr(self.data, op)(axis=axes, keepdims=keepdims)
        share = f"{factor} * {_expanded(axes, keepdims)}"
        params["axes"] = axes
        text = f"{op}({{a}}{_axis_text(axis, self.ndim)})"
        return self._result(data, (self,), text, (share,), factors=(factor,), params=params, spread=True)

    # -- matrix product and reshape: not elementwise, so no factor; the shares are the whole local step. -----

    def __matmul__(self, other) -> Tensor:
        other = _as_tensor(other, "@")
        if self.ndim < 2 or other.ndim < 2:
            raise ValueError(
                f"@ needs operands of at least 2 dimensions (..., n, k) @ (..., k, m), got shapes "
                f"{self.shape} and {other.shape}"
            )
        if self.shape[-1] != other.shape[-2]:
            raise ValueError(f"@ needs a.shape[-1] == b.shape[-2], got shapes {self.shape} and {other.shape}")
        t = ".T" if self.ndim == 2 and other.ndim == 2 else ".mT"  # .mT swaps the last two axes
        data = self.data @ other.data
        batch = data.shape[:-2]
        # Batch axes the forward broadcast are summed back by _accumulate.
        axes = (_broadcast_axes(self.shape[:-2], batch), _broadcast_axes(other.shape[:-2], batch))
        shares = (f"{{g}} @ {{b}}{t}", f"{{a}}{t} @ {{g}}")
        return self._result(data, (self, other), "{a} @ {b}", shares, broadcast_axes=axes)

    def __rmatmul__(self, other) -> Tensor:
        return _as_tensor(other, "@") @ self

    def reshape(self, *shape) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        try:
            data = self.data.reshape(shape)
        except ValueError:
            raise ValueError(f"cannot reshape a tensor of shape {self.shape} ({self.data.size} elements) "
                             f"to shape {shape}") from None
        text = f"reshape({{a}}, {data.shape})"
        return self._result(data, (self,), text, ("reshape({g}, {shape})",), params={"shape": self.shape})

    # -- backward --------------------------------------------------------------------------------------------

    def topological_order(self) -> list[Tensor]:
        """Every tensor this one depends on, itself last, each after all of its parents (depth first,
        parents in operand order)."""
        order: list[Tensor] = []
        seen: set[int] = set()
        stack: list[tuple[Tensor, bool]] = [(self, False)]
        while stack:
            t, parents_done = stack.pop()
            if parents_done:
                order.append(t)
            elif id(t) not in seen:
                seen.add(id(t))
                stack.append((t, True))
                stack.extend((p, False) for p in reversed(t.parents))
        return order

    def backward(self, grad: np.ndarray | None = None) -> None:
        """Fill in `.grad` of every tensor in the graph with the gradient of sum(self * grad).

        Inputs:
        - grad: the upstream gradient, of this tensor's shape; ones when None.

        Gradients are those of this pass: earlier ones are cleared, not accumulated.
        """
        if grad is None:
            grad = np.ones_like(self.data)
        else:
            grad = np.asarray(grad)
            if grad.shape != self.shape:
                raise ValueError(f"grad must have the tensor's shape {self.shape}, got {grad.shape}")
            grad = grad.astype(self.dtype, copy=True)
        order = self.topological_order()
        for t in order:
            t.grad = None
        self.grad = grad
        for t in reversed(order):
            if t.grad is not None:
                for parent, vjp in zip(t.parents, t.vjps):
                    parent._accumulate(vjp(t.grad))


# -- helpers -------------------------------------------------------------------------------------------------


# The elementwise operations of two tensors: the forward, and the local gradient of each operand.
_BINARY = {"+": (np.add, ("1", "1")), "-": (np.subtract, ("1", "-1")), "*": (np.multiply, ("{b}", "{a}")),
           "/": (np.true_divide, ("1 / {b}", "-{a} / {b}**2"))}


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _number(value) -> str:
    """A number as it appears in the texts: 1e-05, 0.5, 2."""
    return f"{float(value):g}"


def _as_tensor(value, op: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        return Tensor(value, requires_grad=False)
    raise TypeError(f"unsupported operand for {op}: Tensor and {type(value).__name__} "
                    f"(use a Tensor, a numpy.ndarray or a Python number)")


def _normalize_axes(axis: int | Axes | None, ndim: int) -> Axes:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for a tensor with {ndim} dimensions")
    return tuple(sorted(a % ndim for a in axes))


def _axis_text(axis: int | Axes | None, ndim: int) -> str:
    if axis is None:
        return ""
    axes = _normalize_axes(axis, ndim)
    return f", axis={axes[0]}" if len(axes) == 1 else f", axis={axes}"


def _expanded(axes: Axes, keepdims: bool) -> str:
    """The upstream gradient of a reduction, with the reduced axes put back where broadcasting would not
    put them by itself (it only adds axes in front)."""
    if keepdims or axes == tuple(range(len(axes))):
        return "{g}"
    return "expand_dims({g}, {axes})"


_NAME = re.compile(r"\{(\w+)\}")  # {a} {b} {out} {g} and an operation's parameters, in a template


def _text(template: str, params: Mapping[str, object]) -> str:
    """What the graph shows: the parameters written in, {a} {b} {out} {g} kept for `steps` to fill."""
    return _NAME.sub(lambda m: _param_text(params[m[1]]) if m[1] in params else m[0], template)


def _evaluate(template: str, values: Mapping[str, object], as_float: bool = False):
    """The template's numbers: every name bound to its array or exact value, the functions NumPy's."""
    value = eval(_compiled(template), _FUNCTIONS, values)  # our own templates, not user input
    # A literal factor ("1", "-1") in the upstream gradient's kind of number.
    return float(value) if as_float and isinstance(value, int) else value


@cache
def _compiled(template: str) -> CodeType:
    """The template as a Python expression: {name} -> name."""
    return compile(_NAME.sub(r"\1", template), template, "eval")


def _param_text(value) -> str:
    return _number(value) if _is_number(value) else str(value)


def _broadcast_axes(shape: tuple[int, ...], out_shape: tuple[int, ...]) -> Axes:
    """The axes of out_shape that broadcasting an operand of `shape` stretched (or added in front)."""
    lead = len(out_shape) - len(shape)
    stretched = tuple(lead + i for i, n in enumerate(shape) if n == 1 and out_shape[lead + i] != 1)
    return tuple(range(lead)) + stretched


def _unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum `grad` over the axes that broadcasting added or stretched, back to `shape`."""
    if grad.shape == shape:
        return grad
    axes = _broadcast_axes(shape, grad.shape)
    return grad.sum(axis=axes, keepdims=True).reshape(shape)
