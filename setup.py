"""The compiled parts of traitstream; everything else is declared in pyproject.toml.

Three C modules in ``src/traitstream/compiled/`` run the hot paths that earn it
(docs/performance.md has the measurements): the v1 Avro record's fast encode and
decode (``_v1c.c``), the dialects' checks (``_checks.c``) and the merge's
per-trait loops (``_merge.c``). Each has a Python twin that is its reference.
``optional``: without a C compiler the install still succeeds and the Python
twins serve alone; ``TRAITSTREAM_IMPL`` (``traitstream.native``) chooses at run
time.
"""

from setuptools import Extension, setup

_DIR = "src/traitstream/compiled"
_HEADERS = [f"{_DIR}/{name}.h" for name in ("_named_tuple", "_shared_names")]
_FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]
MODULES = ("_v1c", "_checks", "_merge")

setup(
    ext_modules=[
        Extension(
            f"traitstream.compiled.{name}",
            [f"{_DIR}/{name}.c"],
            depends=_HEADERS,
            extra_compile_args=_FLAGS,
            optional=True,
        )
        for name in MODULES
    ]
)
