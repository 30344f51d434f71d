"""The numbers behind each backward step: local gradient times upstream gradient, summed over the
broadcast axes and over the uses, is the engine's gradient; and the staged batch norm walks as in
CS231n's graph."""

import numpy as np
import pytest

from normlab.autograd import GraphView, Tensor, sample_graph
from normlab.autograd.trace import backward_values, forward_values


def _custom_graph():
    """@, reshape, a tensor used twice by one operation, a folded chain with a reduction in it, and a
    constant: the cases the normalizations do not have."""
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((4, 3)), "x")
    w = Tensor(rng.standard_normal((3, 2)), "w")
    h = (x @ w).named("h")
    r = h.reshape(2, 4).named("r")
    s = (r * r + np.ones((2, 4))).named("s")
    loss = (s.exp() * 0.5).mean().named("loss")
    loss.backward()
    return GraphView(loss)


@pytest.mark.parametrize("make", [
    lambda: GraphView(sample_graph("batchnorm", rng=np.random.default_rng(0)).out),
    lambda: GraphView(sample_graph("batchnorm", rng=np.random.default_rng(1), shape=(5, 2, 3, 2)).out),
    lambda: GraphView(sample_graph("layernorm", rng=np.random.default_rng(0), shape=(3, 2, 4)).out),
    lambda: GraphView(sample_graph("groupnorm", rng=np.random.default_rng(0)).out),
    _custom_graph,
], ids=["batchnorm", "batchnorm-4d", "layernorm-3d", "groupnorm", "custom"])
def test_every_gradient_is_the_sum_over_uses_of_local_times_upstream(make):
    view = make()
    steps = backward_values(view)
    assert [b.step.node.name for b in steps] == [s.node.name for s in view.steps]
    for b in steps:
        assert b.gradient is b.step.node.tensor.grad
        if not b.uses:
            assert b.step.node.tensor is view.out
            continue
        total = sum(u.summed for u in b.uses)
        np.testing.assert_allclose(total, b.gradient, rtol=1e-12, atol=1e-14)
        for u in b.uses:
            assert u.upstream is view.node(u.use.consumer).tensor.grad
            # a reduction's factor multiplies its upstream spread back over the reduced axes instead
            if u.local is not None and (len(u.use.path) > 1 or u.use.path[0][0].elementwise):
                np.testing.assert_allclose(u.product, u.local * u.upstream, rtol=1e-12, atol=1e-14)
            assert u.summed.shape == b.gradient.shape
            if u.sum_axes:
                np.testing.assert_allclose(u.summed, u.product.sum(axis=u.sum_axes).reshape(u.summed.shape),
                                           rtol=1e-12, atol=1e-14)
            else:
                assert u.summed.shape == u.product.shape


def test_batchnorm_steps_read_as_the_staged_graph():
    view = GraphView(sample_graph("batchnorm", rng=np.random.default_rng(0)).out)
    names = [node.name for node, _ in forward_values(view)]
    assert names == ["x", "mu", "xmu", "sq", "var", "sqrtvar", "ivar", "xhat", "gamma", "gammax", "beta", "out"]
    steps = {b.step.gradient: b for b in backward_values(view)}
    xmu = view.node("xmu").tensor.data
    ivar = view.node("ivar").tensor.data
    through_xhat, through_sq = steps["dxmu"].uses
    assert (through_xhat.use.consumer, through_xhat.use.local) == ("xhat", "ivar")
    np.testing.assert_array_equal(through_xhat.local, ivar)
    assert (through_sq.use.consumer, through_sq.use.local) == ("sq", "2 * xmu")
    np.testing.assert_array_equal(through_sq.local, 2 * xmu)
    # mu was broadcast over the batch in xmu = x - mu: its share is summed over axis 0
    (through_xmu,) = steps["dmu"].uses
    assert through_xmu.use.local == "-1" and through_xmu.sum_axes == (0,) and through_xmu.product.shape == (4, 3)
    # var + eps is folded into sqrtvar: one local gradient for the chain
    (through_sqrtvar,) = steps["dvar"].uses
    assert through_sqrtvar.use.local == "0.5 / sqrtvar" and len(through_sqrtvar.use.path) == 2
    np.testing.assert_allclose(through_sqrtvar.local, 0.5 / view.node("sqrtvar").tensor.data, rtol=1e-15)
    # a mean spreads its upstream gradient back: local 1/4, product of x's shape
    dx_uses = {u.use.consumer: u for u in steps["dx"].uses}
    assert dx_uses["mu"].use.local == "1/4" and dx_uses["mu"].product.shape == (4, 3)


def test_operations_that_are_not_elementwise_have_no_local_factor():
    view = _custom_graph()
    steps = {b.step.gradient: b for b in backward_values(view)}
    (through_h,) = steps["dx"].uses
    assert through_h.local is None and through_h.use.term == "dh @ w.T"
    (through_r,) = steps["dh"].uses
    assert through_r.local is None and through_r.use.term == "reshape(dr, (4, 2))"
    assert [u.use.local for u in steps["dr"].uses] == ["r", "r"]  # r * r: each operand's own share


def test_tracing_a_graph_without_backward_says_so():
    x = Tensor(np.ones((2, 2)), "x")
    with pytest.raises(ValueError, match=r"call backward\(\) on its output"):
        backward_values(GraphView((x * 2.0).named("y")))
