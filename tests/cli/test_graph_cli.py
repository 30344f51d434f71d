"""`normlab graph`: renders the graph of a normalization to SVG, PNG or DOT, and explains what to install
when Graphviz is missing."""

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from normlab.cli import main
from normlab.functional.staged import STAGED_NODES

SVG = "{http://www.w3.org/2000/svg}"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot is not installed")


def _svg_node_titles(path):
    root = ET.parse(path).getroot()
    return {g.find(f"{SVG}title").text for g in root.iter(f"{SVG}g") if g.get("class") == "node"}


@needs_dot
@pytest.mark.parametrize("kind, extra", [("batchnorm", set()), ("layernorm", set()), ("groupnorm", {"xg", "xhatg"})])
def test_graph_writes_an_svg_with_every_named_node(kind, extra, tmp_path, capsys):
    out = tmp_path / f"{kind}.svg"
    assert main(["graph", kind, "--out", str(out)]) == 0
    nodes = _svg_node_titles(out)
    assert nodes == {"x", "gamma", "beta", *STAGED_NODES} | extra
    assert capsys.readouterr().out.strip() == f"wrote {out} (DOT source: {tmp_path / (kind + '.dot')})"


@needs_dot
def test_graph_writes_a_png_top_to_bottom_with_a_custom_shape(tmp_path):
    out = tmp_path / "bn.png"
    assert main(["graph", "batchnorm", "--shape", "8,2,3,3", "--rankdir", "TB", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert "rankdir=TB" in (tmp_path / "bn.dot").read_text()
    assert "(8, 2, 3, 3)" in (tmp_path / "bn.dot").read_text()


def test_graph_dot_output_needs_no_graphviz(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "ln.dot"
    assert main(["graph", "layernorm", "--out", str(out)]) == 0
    assert out.read_text().startswith('digraph "out"')
    assert capsys.readouterr().out.strip() == f"wrote {out}"


def test_graph_without_graphviz_says_how_to_install_it_and_still_writes_the_dot_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no dot anywhere on PATH
    out = tmp_path / "bn.svg"
    assert main(["graph", "batchnorm", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Graphviz's `dot` program was not found on PATH" in err and "sudo apt-get install graphviz" in err
    assert (tmp_path / "bn.dot").read_text().startswith('digraph "out"')
    assert not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["graph", "batchnorm", "--out", "x.pdf"], "path must end in one of .svg, .png, .dot"),
        (["graph", "groupnorm", "--groups", "3", "--out", "x.dot"],
         "num_groups must divide the number of channels C=4"),
    ],
)
def test_graph_bad_arguments_exit_2_with_a_message(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_graph_rejects_a_bad_shape_and_needs_out(capsys):
    with pytest.raises(SystemExit):
        main(["graph", "batchnorm", "--shape", "4", "--out", "x.svg"])
    assert "expected at least 2 positive sizes (N, C, ...), got '4'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["graph", "batchnorm"])
    assert "--out" in capsys.readouterr().err


def test_the_graph_commands_offer_every_kind_of_graph_without_importing_numpy():
    from normlab.autograd.graphs import KINDS
    from normlab.cli._norm_args import KINDS as CLI_KINDS

    assert CLI_KINDS == KINDS
    # `normlab train --help` lists the registered models, which needs numpy; graph and explain stay light.
    code = ("import argparse, sys; from normlab.cli import graph, explain\n"
            "for m in (graph, explain): m.add_arguments(argparse.ArgumentParser())\n"
            "print('numpy' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "False"


def _page_data(path):
    import json
    import re

    html = path.read_text()
    return json.loads(re.search(r'id="normlab-data">(.*?)</script>', html, re.DOTALL).group(1))


@needs_dot
def test_graph_writes_an_interactive_page_with_the_shapes_and_seeds_asked_for(tmp_path, capsys):
    out = tmp_path / "page.html"
    assert main(["graph", "batchnorm", "--shape", "4,3", "--seed", "0", "--out", str(out)]) == 0
    size = out.stat().st_size
    assert capsys.readouterr().out.strip() == f"wrote {out} ({size} bytes; open it in a browser)"
    data = _page_data(out)
    assert data["shapes"] == ["4,3", "16,5"] and data["seeds"] == [0, 1, 2]
    assert data["title"] == "Batch norm"
    descriptions = {(d["shape"], d["seed"]): d["description"] for d in data["samples"]}
    assert descriptions["16,5", 2] == ("Batch norm on x of shape (16, 5); statistics over axis 0, eps 1e-05; "
                                       "upstream gradient dout ~ N(0, 1)")
    assert 80_000 < size < 200_000
    assert main(["graph", "groupnorm", "--shape", "2,6,2,2", "--groups", "3", "--seed", "5", "--page-shapes",
                 "2,6,1,1", "--page-seeds", "5", "6", "--out", str(out)]) == 0
    data = _page_data(out)
    assert data["shapes"] == ["2,6,2,2", "2,6,1,1"] and data["seeds"] == [5, 6]
    assert [n["name"] for n in data["samples"][0]["forward"]][:2] == ["x", "xg"]


@needs_dot
def test_graph_draws_any_function_built_with_the_engine(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_graphs.py").write_text(
        "from normlab.autograd import Tensor\n"
        "def softmax_loss(rng, shape):\n"
        "    x = Tensor(rng.standard_normal(shape), 'x')\n"
        "    e = x.exp().named('e')\n"
        "    p = (e / e.sum(axis=1, keepdims=True)).named('p')\n"
        "    return p.log().mean().named('loss')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "loss.html"
    assert main(["graph", "my_graphs:softmax_loss", "--shape", "3,4", "--out", str(out)]) == 0
    (sample,) = [s for s in _page_data(out)["samples"] if s["seed"] == 0]
    assert [n["name"] for n in sample["forward"]] == ["x", "e", "p", "loss"]
    assert [b["name"] for b in sample["backward"]] == ["loss", "p", "e", "x"]
    assert main(["graph", "my_graphs:softmax_loss", "--out", str(tmp_path / "loss.svg")]) == 0
    assert _svg_node_titles(tmp_path / "loss.svg") == {"x", "e", "p", "loss"}
    capsys.readouterr()
    assert main(["explain", "my_graphs:softmax_loss"]) == 0
    assert "dx" in capsys.readouterr().out


@pytest.mark.parametrize("name, message", [
    ("no_such_module_xyz:f", "NAME no_such_module_xyz:f: cannot import module 'no_such_module_xyz'"),
    ("normlab.autograd:no_function", "NAME normlab.autograd:no_function: module 'normlab.autograd' has no function"),
    ("numpy:zeros", "NAME numpy:zeros(rng, shape=(4, 3)) failed: TypeError: "),
    ("bad_graphs:array", "NAME bad_graphs:array must return a normlab.autograd.Tensor, got ndarray"),
])
def test_graph_of_a_function_that_cannot_be_used_says_why(name, message, tmp_path, monkeypatch, capsys):
    (tmp_path / "bad_graphs.py").write_text("import numpy as np\ndef array(rng, shape):\n    return np.zeros(shape)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["graph", name, "--out", str(tmp_path / "g.dot")]) == 2
    assert message in capsys.readouterr().err


def test_graph_rejects_a_name_that_is_neither_a_kind_nor_a_function(capsys):
    with pytest.raises(SystemExit):
        main(["graph", "batchnrom", "--out", "x.html"])
    assert "expected one of batchnorm, layernorm, groupnorm or MODULE:FUNCTION" in capsys.readouterr().err


def test_graph_page_without_graphviz_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["graph", "batchnorm", "--out", str(tmp_path / "page.html")]) == 1
    err = capsys.readouterr().err
    assert "normlab uses it to lay out the graph" in err and "sudo apt-get install graphviz" in err
    assert not (tmp_path / "page.html").exists()
