"""The engine: every operation's backward against numerical gradients (float64), broadcasting, and the
texts each operation writes about itself."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab.autograd import GraphView, Tensor
from normlab.gradcheck import numerical_gradient, relative_error


def _positive(rng, shape):
    return rng.uniform(0.5, 2.0, shape)


def _any(rng, shape):
    return rng.standard_normal(shape)


# (id, function of the tensors, [(kind of input, shape), ...])
CASES = [
    ("add", lambda a, b: a + b, [(_any, (3, 4)), (_any, (3, 4))]),
    ("add broadcast row", lambda a, b: a + b, [(_any, (3, 4)), (_any, (4,))]),
    ("add broadcast kept axis", lambda a, b: a + b, [(_any, (3, 1)), (_any, (1, 4))]),
    ("sub broadcast", lambda a, b: a - b, [(_any, (2, 3, 4)), (_any, (3, 1))]),
    ("mul broadcast", lambda a, b: a * b, [(_any, (3, 4)), (_any, (1, 4))]),
    ("div broadcast", lambda a, b: a / b, [(_any, (3, 4)), (_positive, (3, 1))]),
    ("neg", lambda a: -a, [(_any, (3, 4))]),
    ("add number", lambda a: a + 1e-5, [(_any, (3, 4))]),
    ("add negative number", lambda a: a + (-2.5), [(_any, (3, 4))]),
    ("number plus", lambda a: 3.0 + a, [(_any, (3, 4))]),
    ("sub number", lambda a: a - 2, [(_any, (3, 4))]),
    ("number minus", lambda a: 2.0 - a, [(_any, (3, 4))]),
    ("mul number", lambda a: a * 0.5, [(_any, (3, 4))]),
    ("number times", lambda a: -3 * a, [(_any, (3, 4))]),
    ("div by number", lambda a: a / 4.0, [(_any, (3, 4))]),
    ("number over", lambda a: 1.0 / a, [(_positive, (3, 4))]),
    ("square", lambda a: a**2, [(_any, (3, 4))]),
    ("cube", lambda a: a**3, [(_any, (3, 4))]),
    ("power 1", lambda a: a**1, [(_any, (3, 4))]),
    ("power one half", lambda a: a**0.5, [(_positive, (3, 4))]),
    ("power -1.5", lambda a: a**-1.5, [(_positive, (3, 4))]),
    ("sum all", lambda a: a.sum(), [(_any, (3, 4))]),
    ("sum axis 0", lambda a: a.sum(axis=0), [(_any, (3, 4))]),
    ("sum axis 1", lambda a: a.sum(axis=1), [(_any, (3, 4))]),
    ("sum axes keepdims", lambda a: a.sum(axis=(0, 2), keepdims=True), [(_any, (2, 3, 4))]),
    ("sum negative axis", lambda a: a.sum(axis=-1), [(_any, (2, 3, 4))]),
    ("mean all", lambda a: a.mean(), [(_any, (3, 4))]),
    ("mean axis 1 keepdims", lambda a: a.mean(axis=1, keepdims=True), [(_any, (3, 4))]),
    ("mean middle axis", lambda a: a.mean(axis=1), [(_any, (2, 3, 4))]),
    ("sqrt", lambda a: a.sqrt(), [(_positive, (3, 4))]),
    ("exp", lambda a: a.exp(), [(_any, (3, 4))]),
    ("log", lambda a: a.log(), [(_positive, (3, 4))]),
    ("matmul", lambda a, b: a @ b, [(_any, (3, 4)), (_any, (4, 2))]),
    ("batched matmul broadcast", lambda a, b: a @ b, [(_any, (2, 3, 4)), (_any, (4, 5))]),
    ("reshape", lambda a: a.reshape(4, 3), [(_any, (2, 6))]),
    ("reshape tuple", lambda a: a.reshape((2, -1)), [(_any, (2, 3, 2))]),
    ("composite", lambda a, b: ((a - b.mean(axis=0, keepdims=True)) ** 2 / (b.exp() + 1.0)).log(),
     [(_any, (3, 4)), (_any, (3, 4))]),
    ("unnamed folded chain", lambda a: (a * 2.0 + 1.0).sqrt() * a, [(_positive, (3, 4))]),
    ("operand used twice", lambda a: a * a + a, [(_any, (3, 4))]),
]


def _inputs(spec, rng):
    return [kind(rng, shape) for kind, shape in spec]


def _output(f, arrays, names=None):
    tensors = [Tensor(a, name) for a, name in zip(arrays, names or [None] * len(arrays))]
    return f(*tensors), tensors


@pytest.mark.parametrize("name, f, spec", CASES, ids=[c[0] for c in CASES])
def test_backward_matches_numerical_gradient(name, f, spec):
    rng = np.random.default_rng(0)
    arrays = _inputs(spec, rng)
    out, tensors = _output(f, arrays)
    dout = rng.standard_normal(out.shape)
    out.backward(dout)
    for i, (array, tensor) in enumerate(zip(arrays, tensors)):
        assert tensor.grad.shape == array.shape

        def g(v, i=i):
            return _output(f, [v if j == i else a for j, a in enumerate(arrays)])[0].data

        assert relative_error(tensor.grad, numerical_gradient(g, array.copy(), dout)) < 1e-8


@pytest.mark.parametrize("fold", [False, True], ids=["every op a node", "folded into a named output"])
@pytest.mark.parametrize("name, f, spec", CASES, ids=[c[0] for c in CASES])
def test_the_texts_of_every_operation_compute_its_values_and_gradients(name, f, spec, fold, texts_of):
    rng = np.random.default_rng(1)
    arrays = _inputs(spec, rng)
    out, _ = _output(f, arrays, names=["a", "b"][: len(arrays)])
    if fold:
        out.named("y")
    out.backward(rng.standard_normal(out.shape))
    pairs = texts_of(GraphView(out))
    assert pairs, "nothing was evaluated"
    for key, (from_text, in_graph) in pairs.items():
        np.testing.assert_allclose(from_text, in_graph, rtol=1e-12, atol=1e-12, err_msg=key)


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_broadcasting_sums_the_gradient_back_to_each_operand_shape(data):
    out_shape = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3), label="out_shape")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))

    def operand_shape():
        dropped = data.draw(st.integers(0, len(out_shape)))
        return tuple(n if data.draw(st.booleans()) else 1 for n in out_shape[dropped:])

    a, b = rng.standard_normal(operand_shape()), rng.standard_normal(operand_shape())
    ta, tb = Tensor(a), Tensor(b)
    out = ta * tb + ta
    dout = rng.standard_normal(out.shape)
    out.backward(dout)
    # Closed form: d/da = (b + 1) * dout, d/db = a * dout, each summed back over what broadcasting stretched.
    expected_a = np.broadcast_to((b + 1) * dout, out.shape)
    expected_b = np.broadcast_to(a * dout, out.shape)
    for grad, expected, shape in ((ta.grad, expected_a, a.shape), (tb.grad, expected_b, b.shape)):
        lead = len(out.shape) - len(shape)
        summed = expected.sum(axis=tuple(range(lead)))
        summed = summed.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True)
        np.testing.assert_allclose(grad, summed.reshape(shape), rtol=1e-12, atol=1e-12)


def test_dtype_is_preserved_through_forward_and_backward():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((4, 3)).astype(np.float32))
    y = ((x - x.mean(axis=0, keepdims=True)) ** 2 + 1e-5).sqrt() * 0.5
    y.backward()
    assert y.dtype == np.float32 and x.grad.dtype == np.float32


def test_backward_starts_from_ones_and_clears_earlier_gradients():
    x = Tensor(np.array([1.0, 2.0, 3.0]))
    y = (x * x).sum()
    y.backward()
    y.backward()  # a second pass gives the same gradient, not twice it
    np.testing.assert_array_equal(x.grad, [2.0, 4.0, 6.0])


def test_constants_receive_no_gradient_and_numpy_arrays_become_constants():
    c = np.array([1.0, 2.0])
    x = Tensor(np.array([3.0, 4.0]))
    y = c * x + Tensor(np.ones(2), requires_grad=False)
    y.backward(np.array([1.0, 10.0]))
    np.testing.assert_array_equal(x.grad, [1.0, 20.0])
    assert all(p.grad is None for p in y.parents if not p.requires_grad)
    assert not Tensor(np.ones(2), requires_grad=False).__add__(1.0).requires_grad


def test_topological_order_puts_every_tensor_after_its_parents():
    a, b = Tensor(np.ones(2), "a"), Tensor(np.ones(2), "b")
    c = (a * b).named("c")
    d = (c + a).named("d")
    e = (d * c).named("e")
    order = e.topological_order()
    assert [t.name for t in order] == ["a", "b", "c", "d", "e"]
    assert all(order.index(p) < order.index(t) for t in order for p in t.parents)


def test_a_long_chain_does_not_hit_the_recursion_limit():
    x = Tensor(np.ones(3))
    y = x
    for _ in range(5000):
        y = y * 1.0
    y.backward()
    np.testing.assert_array_equal(x.grad, np.ones(3))


def test_names_and_repr():
    t = Tensor(np.zeros((2, 3)), "x")
    u = (t * 2.0).named("y")
    assert u.name == "y" and u.shape == (2, 3) and u.parents == (t,)
    assert "name='y'" in repr(u) and "2 * {a}" in repr(u) and "leaf" in repr(t)


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: Tensor(np.arange(3)), TypeError, "floating-point dtype"),
        (lambda: Tensor(np.ones(2), name=3), TypeError, "name must be a str"),
        (lambda: Tensor(np.ones(2)).named(""), TypeError, "non-empty str"),
        (lambda: Tensor(np.ones(2)) + [1.0, 2.0], TypeError, "unsupported operand for +: Tensor and list"),
        (lambda: Tensor(np.ones(2)) ** Tensor(np.ones(2)), TypeError, "exponent must be a Python number"),
        (lambda: Tensor(np.ones(3)) @ Tensor(np.ones((3, 2))), ValueError, "at least 2 dimensions"),
        (lambda: Tensor(np.ones((2, 3))) @ Tensor(np.ones((2, 3))), ValueError, "a.shape[-1] == b.shape[-2]"),
        (lambda: Tensor(np.ones((2, 3))).reshape(4, 2), ValueError, "cannot reshape a tensor of shape (2, 3)"),
        (lambda: Tensor(np.ones((2, 3))).sum(axis=2), ValueError, "axis 2 is out of range"),
        (lambda: Tensor(np.ones((2, 3))).backward(np.ones(3)), ValueError, "grad must have the tensor's shape (2, 3)"),
    ],
)
def test_bad_input_raises_a_clear_error(make, error, message):
    with pytest.raises(error, match=re.escape(message)):
        make()
