"""The catalogue of known mistakes: each one a way to recompute the layer wrongly, and its diagnosis in
plain words. A learner's output that equals a mistake's output (and not the reference's) gets that
diagnosis. The recomputation is `normlab.check.simulate.simulate` with the mistake's walk flags, layout
or running-statistics rule.

Texts may use {stat} (what the statistics run over), {m} (how many values each statistic averages),
{over} (what gamma and beta are shared over), {count} (how many values that is) and {rule} (the family's
running-average rule).
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALL = frozenset({"batchnorm", "spatial_batchnorm", "layernorm", "groupnorm"})
RUNNING = frozenset({"batchnorm", "spatial_batchnorm"})


@dataclass(frozen=True)
class Mistake:
    """One known mistake."""

    key: str
    text: str
    kinds: frozenset[str] = ALL
    flags: frozenset[str] = field(default_factory=frozenset)  # normlab.check.walk flags
    layout: str | None = None  # a wrong grouping of the values (see simulate.layout)
    running: str | None = None  # a wrong running-statistics or test-mode rule (see simulate)

    def describe(self, words: dict[str, str]) -> str:
        return self.text.format(**words)


def _flag(key: str, text: str, kinds: frozenset[str] = ALL) -> Mistake:
    return Mistake(key, text, kinds, flags=frozenset({key}))


CATALOGUE: tuple[Mistake, ...] = (
    # Forward: the statistics and the normalization.
    _flag("var_unbiased", "the variance is divided by {m} - 1 (the unbiased variance, np.var(ddof=1)); the "
          "normalization uses the biased variance, divided by {m}, the number of values averaged"),
    _flag("var_uncentred", "the variance is mean(x**2), without subtracting the mean first: var = mean((x - mu)**2)"),
    _flag("eps_missing", "eps is missing: sqrt(var) where sqrt(var + eps) is needed"),
    _flag("eps_outside_sqrt", "eps is added outside the square root: sqrt(var) + eps where sqrt(var + eps) is needed"),
    _flag("var_not_sqrt", "x - mean is divided by var + eps instead of its square root sqrt(var + eps)"),
    # Which values are normalized together.
    Mistake("axes_swapped", "the statistics run over the wrong axis ({wrong_axes}) where {stat} is needed: "
            "an axis mix-up that N == D hides", frozenset({"batchnorm", "layernorm"}), layout="axes_swapped"),
    Mistake("spatial_no_transpose", "x was reshaped to (N*H*W, C) without moving the channels last first: "
            "use x.transpose(0, 2, 3, 1).reshape(-1, C), and transpose the result back",
            frozenset({"spatial_batchnorm"}), layout="spatial_no_transpose"),
    Mistake("gn_interleaved", "the groups take every G-th channel (x.reshape(N, C // G, G, H, W)) where group g "
            "holds the C/G consecutive channels g*C/G ... (x.reshape(N, G, C // G, H, W))",
            frozenset({"groupnorm"}), layout="gn_interleaved"),
    Mistake("gn_ignores_groups", "the statistics run over all the channels of each sample (layer norm): each "
            "group's statistics must run over its own C/G channels and the positions",
            frozenset({"groupnorm"}), layout="gn_ignores_groups"),
    Mistake("gn_per_channel", "the statistics run over each channel alone (instance norm) where they must run "
            "over the C/G channels of a group and the positions", frozenset({"groupnorm"}), layout="gn_per_channel"),
    Mistake("gn_with_batch", "the statistics also run over the batch axis: group norm's statistics are per "
            "sample (axis 0 must not be reduced)", frozenset({"groupnorm"}), layout="gn_with_batch"),
    # Running statistics and test mode.
    Mistake("momentum_reversed", "the running averages give the batch the wrong weight: the momentum is the "
            "wrong way round ({rule})", RUNNING, running="momentum_reversed"),
    Mistake("running_var_other", "{running_var_text}", RUNNING, running="running_var_other"),
    Mistake("running_not_updated", "{not_updated_text}", RUNNING, running="running_not_updated"),
    Mistake("test_batch_stats", "test mode normalizes with the batch's own statistics; it must use running_mean "
            "and running_var (and leave them unchanged)", RUNNING, running="test_batch_stats"),
    Mistake("test_updates_running", "test mode changed the running statistics; only training updates them",
            RUNNING, running="test_updates_running"),
    # Backward.
    _flag("eps_missing_backward", "the backward pass forgets eps: it uses sqrt(var) where the forward used "
          "sqrt(var + eps)"),
    _flag("dbeta_mean", "dbeta is 1/{count} of the expected value: a mean over {over} where a sum is needed (beta "
          "was broadcast over {over} in the forward pass, so its gradient sums over it)"),
    _flag("dgamma_mean", "dgamma is 1/{count} of the expected value: a mean over {over} where a sum is needed"),
    _flag("dxhat_no_gamma", "dx lacks the factor gamma: dxhat = dout where dxhat = dout * gamma is needed"),
    _flag("dxhat_summed", "dxhat is summed over {stat} where it must stay elementwise (dxhat = dout * gamma); "
          "broadcasting hid the shape"),
    _flag("divar_mean", "divar is a mean where a sum over {stat} is needed: divar = sum(dxhat * xmu)"),
    _flag("divar_not_summed", "divar is not summed over {stat}: divar = sum(dxhat * xmu) has one value per "
          "normalized group; broadcasting hid the shape"),
    _flag("dsqrtvar_sign", "dsqrtvar has the opposite sign: the derivative of 1/s is -1/s**2"),
    _flag("dsqrtvar_squared_twice", "dsqrtvar divides by (var + eps)**2 where sqrtvar**2 = var + eps is needed: "
          "the derivative of 1/s is -1/s**2, with s = sqrt(var + eps)"),
    _flag("dvar_no_half", "dvar lacks the factor 1/2 of the square root's derivative: d sqrt(v) / dv = 0.5 / sqrt(v)"),
    _flag("dvar_eps_missing", "dvar forgets eps: 0.5 / sqrt(var) where 0.5 / sqrt(var + eps) (= 0.5 / sqrtvar) is "
          "needed"),
    _flag("dsq_no_1_over_m", "dsq lacks the factor 1/{m} of the mean var = mean(sq)"),
    _flag("dxmu2_missing",
          "the path through the variance is missing: dxmu = dxmu1 + dxmu2, with dxmu2 = 2 * xmu * dsq"),
    _flag("dmu_sign", "dmu has the opposite sign: xmu = x - mu gives mu the gradient -sum(dxmu)"),
    _flag("dx2_no_1_over_m", "dx2 lacks the factor 1/{m} of the mean mu = mean(x)"),
    _flag("dmu_missing", "the path through the mean is missing: dx = dx1 + dx2, with dx2 = dmu / {m}"),
)
BY_KEY = {m.key: m for m in CATALOGUE}


def words_for(kind: str, convention: str) -> dict[str, str]:
    """The family-specific words the catalogue's texts use."""
    stat = {"batchnorm": "axis 0 (the batch)", "layernorm": "axis 1 (each sample's features)",
            "spatial_batchnorm": "axes (0, 2, 3) (the batch and the positions)",
            "groupnorm": "each sample's group of C/G channels and its positions"}[kind]
    wrong = {"batchnorm": "axis 1", "layernorm": "axis 0"}.get(kind, "")
    over = "the batch" if kind in ("batchnorm", "layernorm") else "the batch and the positions"
    count = "N" if kind in ("batchnorm", "layernorm") else "N*H*W"
    m = {"batchnorm": "N", "layernorm": "D", "spatial_batchnorm": "N*H*W", "groupnorm": "C/G*H*W"}[kind]
    if convention == "cs231n":
        rule = "CS231n's rule: running = momentum * running + (1 - momentum) * batch"
        var_text = (f"running_var stores the unbiased variance (divided by {m} - 1); CS231n stores the biased batch "
                    "variance, the one the forward normalizes with")
        not_updated = ("the running statistics were not updated: store them back into bn_param "
                       "(bn_param['running_mean'] = running_mean, and the same for running_var)")
    else:
        rule = "normlab's rule: running = (1 - momentum) * running + momentum * batch"
        var_text = ("running_var stores the biased variance; normlab (as PyTorch) stores the unbiased batch variance "
                    f"var * {m} / ({m} - 1)")
        not_updated = ("the running statistics were not updated in place: `running_mean = ...` rebinds the name; "
                       "write into the array (running_mean *= 1 - momentum; running_mean += momentum * mean)")
    return {"stat": stat, "m": m, "count": count, "wrong_axes": wrong, "over": over, "rule": rule,
            "running_var_text": var_text, "not_updated_text": not_updated}
