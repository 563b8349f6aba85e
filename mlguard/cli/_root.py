"""The root click group. Each area adds its commands in its own module of this package."""

from __future__ import annotations

import click

EXIT_HELP = """Exit codes: 0 success; 1 a check failed (invalid policy, integrity failure, fairness violation);
2 usage error (bad arguments, missing file)."""


@click.group(help=f"mlguard: a compliance and privacy guard for ML endpoints.\n\n{EXIT_HELP}",
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mlguard")
def cli() -> None:
    """Root of every ``mlguard`` command."""
