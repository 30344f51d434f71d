from normlab.cli import main


def test_gradcheck_command_passes_and_prints_every_layer(capsys):
    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    for layer in ("batchnorm (N, D)", "batchnorm (N, C, H, W)", "layernorm", "groupnorm", "instancenorm"):
        assert layer in out
    assert "PASS" in out


def test_gradcheck_command_fails_with_an_impossible_tolerance(capsys):
    assert main(["gradcheck", "--tolerance", "1e-30"]) == 1
    assert "FAIL" in capsys.readouterr().out
