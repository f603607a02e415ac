"""The compiled modules, all of them: C twins of Python functions on the hot paths.

Nothing imports them directly: ``traitstream.native.load`` does, as
``TRAITSTREAM_IMPL`` says. Each module's Python reference is named in its C
source; tests/unit compares both and tests/fuzz fuzzes every entry point that
sees outside input, under AddressSanitizer, against that reference.
"""
