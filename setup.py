"""The compiled part of traitstream; everything else is declared in pyproject.toml.

``optional``: without a C compiler the install still succeeds, and the Python
functions that the extension mirrors serve alone (``traitstream.avro.v1.COMPILED``).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "traitstream.avro._v1c",
            ["src/traitstream/avro/_v1c.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
            optional=True,
        )
    ]
)
