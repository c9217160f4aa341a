"""Every docstring example in the ``iobuf`` package runs and shows what it claims.

The examples run against the public names of the core in use (``iobuf.IoBuf``
is the compiled one unless ``IOBUF_NO_EXTENSIONS=1``), so CI checks them on
both cores. The README's and docs' examples are run by ``test_readme``.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil
from types import ModuleType

import pytest

import iobuf

#: Modules whose docstrings hold examples today; a finder that silently found
#: none of them would make every other test here pass vacuously.
MODULES_WITH_EXAMPLES = {
    "iobuf._chain",
    "iobuf._config",
    "iobuf._pool",
    "iobuf._storage",
    "iobuf._views",
}


def _module_names() -> list[str]:
    """Every module of the package, except the compiled core's Cython source
    when it is not the compiled module (``_core.py`` must never run as Python)."""
    names = [info.name for info in pkgutil.walk_packages(iobuf.__path__, "iobuf.")]
    if iobuf.IMPLEMENTATION != "compiled":
        names.remove("iobuf._core")
    return ["iobuf", *names]


def _examples(module: ModuleType) -> list[doctest.DocTest]:
    """The module's doctests, each run with the public names in scope."""
    public = {name: getattr(iobuf, name) for name in iobuf.__all__}
    tests = doctest.DocTestFinder().find(module, extraglobs=public)
    return [test for test in tests if test.examples]


@pytest.mark.parametrize("name", _module_names())
def test_docstring_examples_run_and_are_true(name: str) -> None:
    """Each example in the module's docstrings runs and prints exactly its shown output."""
    module = importlib.import_module(name)
    report = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in _examples(module):
        runner.run(test, out=report.write)
    failed, attempted = runner.summarize(verbose=False)
    assert failed == 0, f"{failed} of {attempted} examples in {name} failed:\n{report.getvalue()}"


def test_examples_are_found() -> None:
    """The finder sees the examples the package has (so the test above is not vacuous)."""
    found = {name for name in _module_names() if _examples(importlib.import_module(name))}
    assert found >= MODULES_WITH_EXAMPLES
