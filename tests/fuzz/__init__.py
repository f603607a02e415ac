"""Coverage-guided fuzzing of the compiled modules under AddressSanitizer.

``build`` compiles an AddressSanitizer variant of every compiled module into a
folder of its own (never the source tree); ``targets`` holds one function per
entry point that sees outside input, each checking the compiled code against its
Python reference on every input; ``run`` fuzzes one target with atheris in a
process that loads the sanitizer's runtime first. ``make fuzz`` runs every
target for long; ``test_fuzz.py`` runs each for a fixed number of inputs.
"""
