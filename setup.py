"""The optional compiled core; everything else about the build is in pyproject.toml.

``src/iobuf/_core.py`` (Cython pure-Python mode, C declarations in ``_core.pxd``)
is cythonized and compiled into the extension ``iobuf._core`` when it exists.
The extension is optional: a Cython or C compiler error prints a warning
(``building extension "iobuf._core" failed``; pip shows it with ``-v``) and the
install goes on with the pure-Python core, which is the reference.

Build-time knobs (environment variables, any non-empty value):

- ``IOBUF_NO_EXTENSIONS``: build no extension (the aio-libs convention; at import
  time the same variable makes iobuf use the pure-Python core).
- ``IOBUF_ASAN``: compile and link with AddressSanitizer (``scripts/asan.sh``).
- ``IOBUF_CYTHON_ANNOTATE``: also write ``src/iobuf/_core.html``, Cython's
  annotated source (yellow lines call into the Python C API).

Each kind of build has its own build directory (``build/<kind>``), so a pure or
ASan build never packages a compiled file left there by another kind.
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py
from setuptools.errors import CompileError

CORE = "src/iobuf/_core.py"
NO_EXTENSIONS = bool(os.environ.get("IOBUF_NO_EXTENSIONS"))
ASAN = bool(os.environ.get("IOBUF_ASAN"))

# The directives the prototype was measured with (its figures: docs/performance.md;
# its code: `git log -- prototypes/compiled-core`): no GIL re-enabled on import on
# 3.13t, C semantics for indexing and division. Keywords are allowed on every method, as in the
# pure-Python core (``try_alloc(capacity=...)``); the prototype's positional-only
# calls were a few ns cheaper, and the targets hold without them (docs/performance.md).
# _core.py repeats the two directives its behaviour depends on in its header.
DIRECTIVES = {
    "language_level": 3,
    "freethreading_compatible": True,
    "boundscheck": False,
    "wraparound": False,
    "initializedcheck": False,
    "cdivision": True,
    "infer_types": True,
    "always_allow_keywords": True,
}
OPTIMIZE = ["-O2"]
# -O1 keeps ASan's reports readable; gcc takes the last -O given.
ASAN_COMPILE = ["-fsanitize=address", "-fno-omit-frame-pointer", "-O1", "-g"]
ASAN_LINK = ["-fsanitize=address"]


class BuildExt(build_ext):
    """Cythonizes while building, so that a Cython error fails only the optional extension."""

    def build_extension(self, ext: Extension) -> None:
        try:
            from Cython.Build import cythonize  # noqa: PLC0415 - only a build with the core needs it

            (cythonized,) = cythonize(
                [ext],
                compiler_directives=DIRECTIVES,
                annotate=bool(os.environ.get("IOBUF_CYTHON_ANNOTATE")),
                force=self.force,
                quiet=True,
            )
            ext.sources = cythonized.sources  # the generated .c (setuptools keeps its own Extension)
        except Exception as exc:  # Cython's errors are no distutils errors; make it one
            self._forget(ext)
            raise CompileError(f"cythonizing {CORE} failed: {exc!r}") from exc
        try:
            super().build_extension(ext)
        except Exception:
            self._forget(ext)
            raise

    def _forget(self, ext: Extension) -> None:
        """A failed build leaves no older compiled core behind to be installed in its place."""
        Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
        if self.editable_mode:  # `pip install -e` copies the result next to the source
            Path("src", self.get_ext_filename(ext.name)).unlink(missing_ok=True)


class BuildPy(build_py):
    """The wheel ships the compiled core, not its Cython source: uncompiled it would
    need Cython at run time and is no substitute for the pure-Python core."""

    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        modules = super().find_package_modules(package, package_dir)
        return [m for m in modules if (m[0], m[1]) != ("iobuf", "_core")]


def extensions() -> list[Extension]:
    if NO_EXTENSIONS or not Path(CORE).exists():
        return []
    return [
        Extension(
            "iobuf._core",
            [CORE],
            depends=["src/iobuf/_core.pxd"],
            extra_compile_args=ASAN_COMPILE if ASAN else OPTIMIZE,
            extra_link_args=ASAN_LINK if ASAN else [],
            optional=True,
        )
    ]


KIND = "pure" if NO_EXTENSIONS else "asan" if ASAN else "compiled"
setup(
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExt, "build_py": BuildPy},
    options={"build": {"build_base": f"build/{KIND}"}},
)
