"""The compiled parts of traitstream; everything else is declared in pyproject.toml.

Two C extensions mirror Python functions on the workers' and the edge's hot paths:
``avro/_v1c.c`` (the v1 record's codec) and ``_stamps.c`` (a profile's stamps).
``optional``: without a C compiler the install still succeeds, and the Python
functions serve alone (``traitstream.avro.v1.COMPILED``, ``traitstream.merge.COMPILED``).
"""

from setuptools import Extension, setup

_FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]

setup(
    ext_modules=[
        Extension(name, [source], extra_compile_args=_FLAGS, optional=True)
        for name, source in [
            ("traitstream.avro._v1c", "src/traitstream/avro/_v1c.c"),
            ("traitstream._stamps", "src/traitstream/_stamps.c"),
        ]
    ]
)
