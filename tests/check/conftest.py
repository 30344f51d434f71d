"""Helpers for the check tests: the fixture files and broken copies of them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def mutate(source: str, function: str, replacements: list[tuple[str, str]]) -> str:
    """`source` with each (old, new) replaced once inside the body of `function` (old must be there)."""
    start = source.index(f"def {function}(")
    following = re.search(r"\n(?=def |\S)", source[start + 1:])
    end = len(source) if following is None else start + 1 + following.start()
    body = source[start:end]
    for old, new in replacements:
        assert old in body, f"{old!r} is not in {function}"
        body = body.replace(old, new, 1)
    return source[:start] + body + source[end:]


@pytest.fixture
def broken_file(tmp_path):
    """broken_file(fixture name, function, [(old, new), ...]) -> path of a copy with the edits made."""

    def make(fixture: str, function: str, replacements: list[tuple[str, str]]) -> Path:
        path = tmp_path / "layers.py"
        path.write_text(mutate((FIXTURES / fixture).read_text(), function, replacements))
        return path

    return make
