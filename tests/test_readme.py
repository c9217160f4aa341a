"""The README's and the operations page's examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("page", ["README.md", "docs/operations.md"])
def test_every_python_example_runs(page: str) -> None:
    """Every ```python block on the page executes without error (its asserts included)."""
    path = ROOT / page
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(), re.S)
    assert blocks, f"{page} has a python example"
    for block in blocks:
        exec(compile(block, str(path), "exec"), {"__name__": "docs"})  # noqa: S102
