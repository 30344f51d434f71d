"""`normlab gradcheck`: check every normalization's backward against numerical gradients and print the
relative errors."""

from __future__ import annotations

HELP = "check each normalization's backward pass against numerical gradients (float64)"


def add_arguments(parser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    parser.add_argument("--tolerance", type=float, default=1e-7,
                        help="largest relative error that passes (default %(default)g)")


def run(args) -> int:
    from functools import partial

    import numpy as np

    from normlab import functional as F
    from normlab.gradcheck import check_layer, relative_error

    rng = np.random.default_rng(args.seed)

    def affine(c):
        return {"gamma": rng.standard_normal(c), "beta": rng.standard_normal(c)}

    x2, x4 = rng.standard_normal((6, 5)) * 2 + 3, rng.standard_normal((4, 6, 3, 3)) * 2 + 3
    cases = {  # name: (forward(x, gamma, beta), backward, inputs)
        "batchnorm (N, D)": (F.batchnorm_forward, F.batchnorm_backward, {"x": x2, **affine(5)}),
        "batchnorm (N, C, H, W)": (F.batchnorm_forward, F.batchnorm_backward, {"x": x4, **affine(6)}),
        "batchnorm staged": (F.batchnorm_forward, F.batchnorm_backward_staged, {"x": x2.copy(), **affine(5)}),
        "layernorm (N, D)": (F.layernorm_forward, F.layernorm_backward, {"x": x2.copy(), **affine(5)}),
        "layernorm staged": (F.layernorm_forward, F.layernorm_backward_staged, {"x": x2.copy(), **affine(5)}),
        "groupnorm G=3": (partial(F.groupnorm_forward, num_groups=3), F.groupnorm_backward,
                          {"x": x4.copy(), **affine(6)}),
        "instancenorm": (F.instancenorm_forward, F.instancenorm_backward, {"x": x4.copy(), **affine(6)}),
    }
    worst = 0.0
    print(f"{'layer':<24} {'dx':>10} {'dgamma':>10} {'dbeta':>10}")
    for name, (forward, backward, inputs) in cases.items():
        errors = check_layer(forward, backward, inputs, rng=rng)
        worst = max(worst, *errors.values())
        print(f"{name:<24} " + " ".join(f"{e:>10.1e}" for e in errors.values()))
    out, cache = F.batchnorm_forward(x2, np.ones(5), np.zeros(5))
    dout = rng.standard_normal(out.shape)
    gap = max(relative_error(a, b) for a, b in zip(F.batchnorm_backward(dout, cache),
                                                   F.batchnorm_backward_staged(dout, cache)))
    print(f"staged vs simplified batchnorm backward: {gap:.1e}")
    ok = worst <= args.tolerance
    print(f"{'PASS' if ok else 'FAIL'}: largest relative error {worst:.1e} (tolerance {args.tolerance:.0e})")
    return 0 if ok else 1
