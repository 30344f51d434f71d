"""Every known mistake, made in a copy of a correct implementation, is caught: the function fails, the
report names the wrong output, the catalogue's diagnosis (or the shape words), and for a staged
backward the first wrong step."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from normlab.check import check_file

CS231N = "cs231n_correct.py"
NORMLAB = "normlab_correct.py"


@dataclass(frozen=True)
class Broken:
    name: str
    edit: str  # the function edited
    replacements: tuple[tuple[str, str], ...]
    function: str  # the function that must fail
    output: str  # an output that must fail
    mistake: str | None = None  # a catalogue key one of the output's diagnoses must come from
    words: str | None = None  # words that must appear in the function's diagnoses
    step: str | None = None  # the first wrong step of the staged function
    fixture: str = CS231N
    case: str | None = None  # a case in which the output must fail


def bn(name, old, new, output, mistake=None, step=None, words=None, function="batchnorm_backward", case=None):
    edit = function if function != "batchnorm_forward" else "batchnorm_forward"
    return Broken(name, edit, ((old, new),), function, output, mistake, words, step, case=case)


CATALOGUE = [
    # The forward's statistics.
    bn("unbiased variance", "var = sq.mean(axis=0)", "var = sq.sum(axis=0) / (N - 1)", "out", "var_unbiased", "var",
       function="batchnorm_forward"),
    bn("uncentred variance", "var = sq.mean(axis=0)", "var = (x**2).mean(axis=0)", "out", "var_uncentred", "var",
       function="batchnorm_forward"),
    bn("eps forgotten in the forward", "sqrtvar = np.sqrt(var + eps)", "sqrtvar = np.sqrt(var)", "out", "eps_missing",
       "sqrtvar", function="batchnorm_forward", case="tiny-variance"),
    bn("eps outside the square root", "sqrtvar = np.sqrt(var + eps)", "sqrtvar = np.sqrt(var) + eps", "out",
       "eps_outside_sqrt", "sqrtvar", function="batchnorm_forward", case="tiny-variance"),
    bn("divided by the variance", "sqrtvar = np.sqrt(var + eps)", "sqrtvar = var + eps", "out", "var_not_sqrt",
       "sqrtvar", function="batchnorm_forward"),
    # Running statistics and test mode.
    bn("momentum the wrong way round", "running_mean = momentum * running_mean + (1 - momentum) * mu",
       "running_mean = (1 - momentum) * running_mean + momentum * mu", "running_mean", "momentum_reversed",
       function="batchnorm_forward", case="momentum"),
    bn("running variance unbiased", "running_var = momentum * running_var + (1 - momentum) * var",
       "running_var = momentum * running_var + (1 - momentum) * var * N / (N - 1)", "running_var",
       "running_var_other", function="batchnorm_forward"),
    bn("running statistics not stored back", 'bn_param["running_mean"] = running_mean', "pass", "running_mean",
       "running_not_updated", function="batchnorm_forward"),
    bn("test mode with batch statistics", "out = gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta",
       "out = gamma * (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + eps) + beta", "out", "test_batch_stats",
       function="batchnorm_forward", case="test"),
    bn("test mode updates the running mean", "out = gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta",
       "out = gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta\n"
       "        running_mean = momentum * running_mean + (1 - momentum) * x.mean(axis=0)", "running_mean",
       "test_updates_running", function="batchnorm_forward", case="test"),
    Broken("statistics over the wrong axis (N == D)", "batchnorm_forward",
           (("mu = x.mean(axis=0)", "mu = x.mean(axis=1, keepdims=True)"),
            ("var = sq.mean(axis=0)", "var = sq.mean(axis=1, keepdims=True)")),
           "batchnorm_forward", "out", "axes_swapped", step="mu", case="square"),
    # The staged backward: one step wrong each.
    bn("dbeta a mean", "dbeta = np.sum(dout, axis=0)", "dbeta = np.mean(dout, axis=0)", "dbeta", "dbeta_mean", "dbeta",
       words="dbeta is 1/N of the expected value"),
    bn("dgamma a mean", "dgamma = np.sum(dgammax * xhat, axis=0)", "dgamma = np.mean(dgammax * xhat, axis=0)",
       "dgamma", "dgamma_mean", "dgamma"),
    bn("dbeta not summed", "dbeta = np.sum(dout, axis=0)", "dbeta = dout", "dbeta", step="dbeta",
       words="it is not summed over axes (0,)"),
    bn("dgamma shaped (1, D)", "dgamma = np.sum(dgammax * xhat, axis=0)",
       "dgamma = np.sum(dgammax * xhat, axis=0, keepdims=True)", "dgamma",
       words="dgamma has shape (1, 5) where (5,) is expected (the values are right"),
    bn("gamma missing in dx", "dxhat = dgammax * gamma", "dxhat = dgammax", "dx", "dxhat_no_gamma", "dxhat"),
    bn("dxhat summed over the batch", "dxhat = dgammax * gamma", "dxhat = np.sum(dgammax * gamma, axis=0)", "dx",
       "dxhat_summed", "dxhat"),
    bn("divar not summed", "divar = np.sum(dxhat * xmu, axis=0)", "divar = dxhat * xmu", "dx", "divar_not_summed",
       "divar"),
    bn("divar a mean", "divar = np.sum(dxhat * xmu, axis=0)", "divar = np.mean(dxhat * xmu, axis=0)", "dx",
       "divar_mean", "divar"),
    bn("dsqrtvar sign", "dsqrtvar = -1.0 / (sqrtvar**2) * divar", "dsqrtvar = 1.0 / (sqrtvar**2) * divar", "dx",
       "dsqrtvar_sign", "dsqrtvar", words="dsqrtvar has the opposite sign"),
    bn("dsqrtvar over (var + eps)**2", "dsqrtvar = -1.0 / (sqrtvar**2) * divar",
       "dsqrtvar = -1.0 / (var + eps)**2 * divar", "dx", "dsqrtvar_squared_twice", "dsqrtvar"),
    bn("dvar without the 1/2", "dvar = 0.5 * 1.0 / np.sqrt(var + eps) * dsqrtvar",
       "dvar = 1.0 / np.sqrt(var + eps) * dsqrtvar", "dx", "dvar_no_half", "dvar"),
    bn("eps forgotten in dvar", "dvar = 0.5 * 1.0 / np.sqrt(var + eps) * dsqrtvar",
       "dvar = 0.5 * 1.0 / np.sqrt(var) * dsqrtvar", "dx", "dvar_eps_missing", "dvar", case="tiny-variance"),
    bn("dsq without 1/N", "dsq = 1.0 / N * np.ones((N, D)) * dvar", "dsq = np.ones((N, D)) * dvar", "dx",
       "dsq_no_1_over_m", "dsq"),
    bn("path through the variance missing", "dx1 = dxmu1 + dxmu2", "dx1 = dxmu1", "dx", "dxmu2_missing", "dx1"),
    bn("dmu sign", "dmu = -1 * np.sum(dxmu1 + dxmu2, axis=0)", "dmu = np.sum(dxmu1 + dxmu2, axis=0)", "dx",
       "dmu_sign", "dmu"),
    bn("dx2 without 1/N", "dx2 = 1.0 / N * np.ones((N, D)) * dmu", "dx2 = np.ones((N, D)) * dmu", "dx",
       "dx2_no_1_over_m", "dx2"),
    bn("path through the mean missing", "dx = dx1 + dx2", "dx = dx1", "dx", "dmu_missing", "dx"),
    # The simplified backward.
    Broken("eps forgotten in the backward", "batchnorm_backward_alt",
           (("N = dout.shape[0]", "N = dout.shape[0]\n    ivar = 1 / np.sqrt(var)\n    xhat = xmu * ivar"),),
           "batchnorm_backward_alt", "dx", "eps_missing_backward", case="tiny-variance"),
    # Layer norm.
    Broken("layer norm over the batch axis", "layernorm_forward",
           (("mu = x.mean(axis=1, keepdims=True)", "mu = x.mean(axis=0, keepdims=True)"),
            ("var = (xmu**2).mean(axis=1, keepdims=True)", "var = (xmu**2).mean(axis=0, keepdims=True)")),
           "layernorm_forward", "out", "axes_swapped", step="mu", case="square"),
    Broken("layer norm dbeta summed over the features", "layernorm_backward",
           (("dbeta = dout.sum(axis=0)", "dbeta = dout.sum(axis=1)"),), "layernorm_backward", "dbeta",
           words="dbeta has shape (4,) where (5,) is expected", step="dbeta"),
    Broken("layer norm dsq with 1/N", "layernorm_backward",
           (("dsq = np.ones_like(xmu) / D * dvar", "dsq = np.ones_like(xmu) * dvar"),), "layernorm_backward", "dx",
           "dsq_no_1_over_m", step="dsq"),
    # Spatial batch norm.
    Broken("spatial batch norm without moving channels last", "spatial_batchnorm_forward",
           (("x_flat = x.transpose(0, 2, 3, 1).reshape(-1, C)", "x_flat = x.reshape(-1, C)"),
            ("out = out_flat.reshape(N, H, W, C).transpose(0, 3, 1, 2)", "out = out_flat.reshape(N, C, H, W)")),
           "spatial_batchnorm_forward", "out", "spatial_no_transpose"),
    # Group norm: statistics over the wrong axes.
    Broken("group norm ignores the groups", "spatial_groupnorm_forward",
           (("xg = x.reshape(N, G, -1)", "xg = x.reshape(N, 1, -1)"),), "spatial_groupnorm_forward", "out",
           "gn_ignores_groups"),
    Broken("group norm per channel", "spatial_groupnorm_forward",
           (("xg = x.reshape(N, G, -1)", "xg = x.reshape(N, C, -1)"),), "spatial_groupnorm_forward", "out",
           "gn_per_channel"),
    Broken("group norm over the batch too", "spatial_groupnorm_forward",
           (("mu = xg.mean(axis=2, keepdims=True)", "mu = xg.mean(axis=(0, 2), keepdims=True)"),
            ("var = (xmu**2).mean(axis=2, keepdims=True)", "var = (xmu**2).mean(axis=(0, 2), keepdims=True)")),
           "spatial_groupnorm_forward", "out", "gn_with_batch", step="mu"),
    Broken("group norm with interleaved groups", "spatial_groupnorm_forward",
           (("xg = x.reshape(N, G, -1)", "xg = x.reshape(N, C // G, G, H * W)"),
            ("mu = xg.mean(axis=2, keepdims=True)", "mu = xg.mean(axis=(1, 3), keepdims=True)"),
            ("var = (xmu**2).mean(axis=2, keepdims=True)", "var = (xmu**2).mean(axis=(1, 3), keepdims=True)")),
           "spatial_groupnorm_forward", "out", "gn_interleaved"),
    # normlab's signatures.
    Broken("running mean rebound instead of updated in place", "batchnorm_forward",
           (("running_mean *= 1 - momentum\n            running_mean += momentum * mean.reshape(-1)",
             "running_mean = (1 - momentum) * running_mean + momentum * mean.reshape(-1)"),),
           "batchnorm_forward", "running_mean", "running_not_updated", fixture=NORMLAB),
    Broken("running variance biased in normlab's convention", "batchnorm_forward",
           (("running_var += momentum * var.reshape(-1) * m / (m - 1)", "running_var += momentum * var.reshape(-1)"),),
           "batchnorm_forward", "running_var", "running_var_other", fixture=NORMLAB),
    Broken("normlab signature: gamma missing in dx", "batchnorm_backward",
           (("g = dout * gamma", "g = dout"),), "batchnorm_backward", "dx", "dxhat_no_gamma", fixture=NORMLAB),
]


@pytest.mark.parametrize("broken", CATALOGUE, ids=[b.name for b in CATALOGUE])
def test_each_known_mistake_is_caught_and_named(broken, broken_file):
    path = broken_file(broken.fixture, broken.edit, list(broken.replacements))
    report = check_file(path, isolate=False)
    assert report.exit_code == 1
    functions = {f.name: f for f in report.functions}
    failed = [name for name, f in functions.items() if not f.passed]
    assert broken.function in failed, report.to_text()
    function = functions[broken.function]
    outputs = [o for c in function.calls if broken.case in (None, c.case) for o in c.outputs
               if o.name == broken.output and not o.passed]
    assert outputs, f"{broken.output} did not fail\n{report.to_text()}"
    if broken.mistake:
        assert any(broken.mistake in o.mistakes for o in outputs), report.to_text()
    if broken.words:
        assert any(broken.words in d for d in function.diagnoses), report.to_text()
    if broken.step:
        assert function.first_wrong_step is not None, report.to_text()
        assert function.first_wrong_step.node == broken.step, report.to_text()


def test_every_catalogue_entry_has_a_broken_implementation():
    from normlab.check.mistakes import CATALOGUE as MISTAKES

    assert {m.key for m in MISTAKES} == {b.mistake for b in CATALOGUE if b.mistake}
