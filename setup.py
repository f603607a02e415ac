"""The compiled parts of traitstream; everything else is declared in pyproject.toml.

Four C extensions mirror Python functions on the workers' and the edge's hot
paths: ``avro/_v1c.c`` (the v1 record's codec), ``_merge.c`` (the merge's per-trait
loops), ``worker/_sizing.c`` (the planner's size bound) and ``dialects/_checks.c``
(the dialects' value and type checks). ``optional``: without a C
compiler the install still succeeds, and the Python functions serve alone
(``traitstream.runtime.missing_extensions()`` names any that were not built).
"""

from setuptools import Extension, setup

_HEADERS = [f"src/traitstream/{name}.h" for name in ("_named_tuple", "_shared_names", "_sha1")]
_FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]

setup(
    ext_modules=[
        Extension(name, [source], depends=_HEADERS, extra_compile_args=_FLAGS, optional=True)
        for name, source in [
            ("traitstream.avro._v1c", "src/traitstream/avro/_v1c.c"),
            ("traitstream._merge", "src/traitstream/_merge.c"),
            ("traitstream.worker._sizing", "src/traitstream/worker/_sizing.c"),
            ("traitstream.dialects._checks", "src/traitstream/dialects/_checks.c"),
        ]
    ]
)
