"""``mlguard config ...``: check a deployment config, print the configuration reference."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from mlguard.cli._root import EXIT_FAILED, cli


@cli.group(help="Deployment configuration (mlguard.yaml).")
def config() -> None:
    """Group of configuration commands."""


@config.command("check", help="Validate FILE as `mlguard serve` will (policies, retention, routes, PII entities, "
                              "model modules, background files) without building any engine or creating any file.\n\n"
                              "Exit codes: 0 valid (warnings may print); 1 invalid: every error printed as "
                              "file:field: message, one a line (the first 20, then how many more), the same "
                              "status and message as `mlguard serve` gives for FILE; 2 usage error (FILE missing).")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def check(ctx: click.Context, file: Path) -> None:
    from mlguard.config import load_config
    from mlguard.errors import ConfigError
    from mlguard.runtime import check_config

    try:
        checked = check_config(load_config(file), file=file, files=True)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)  # as the root group says it for `serve`: word for word
        ctx.exit(EXIT_FAILED)
    for level, notice in checked.notices:
        click.echo(f"{'warning' if level >= logging.WARNING else 'note'}: {notice}", err=True)
    click.echo(f"{file}: ok ({len(checked.routes)} routes; policies {', '.join(checked.policy.ids)})")


@config.command("reference", help="Print every configuration key with its type, default and meaning (Markdown).")
def reference() -> None:
    from mlguard.config.reference import markdown_table

    click.echo(markdown_table())
