"""Implementations of the `latentlens` subcommands; `latentlens.cli` holds their options."""
