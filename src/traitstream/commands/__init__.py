"""The ``traitstream`` subcommands, one module each. A module's ``register`` adds
its parser and names the function that runs it; what that function needs is
imported when it runs, so that each command loads only its own part of the
package."""
