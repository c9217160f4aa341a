import os
from setuptools import setup, Extension
from Cython.Build import cythonize
mod = os.environ.get("SPIKE_MOD", "core_c")
setup(name="spike", ext_modules=cythonize(
    [Extension(mod, [mod + ".py"], extra_compile_args=["-O2"])],
    compiler_directives={"language_level": 3, "freethreading_compatible": True, "boundscheck": False,
                         "wraparound": False, "initializedcheck": False, "cdivision": True, "infer_types": True, "always_allow_keywords": False},
    annotate=True))
