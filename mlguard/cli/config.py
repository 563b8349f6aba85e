"""``mlguard config ...``: check a deployment config, print the configuration reference."""

from __future__ import annotations

from pathlib import Path

import click

from mlguard.cli._root import cli


@cli.group(help="Deployment configuration (mlguard.yaml).")
def config() -> None:
    """Group of configuration commands."""


@config.command("check", help="Validate FILE and compose its policies; exit 1 naming file and field on error.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def check(ctx: click.Context, file: Path) -> None:
    from mlguard.config import load_config
    from mlguard.errors import ConfigError
    from mlguard.policy import resolve_policies
    from mlguard.routes import compile_route

    try:
        cfg = load_config(file)
        policy = resolve_policies(cfg.policies, base_dir=cfg.base_dir)
        for i, route in enumerate(cfg.routes):
            compile_route(i, route, policy)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(1)
    click.echo(f"{file}: ok ({len(cfg.routes)} routes; policies {', '.join(policy.ids)})")


@config.command("reference", help="Print every configuration key with its type, default and meaning (Markdown).")
def reference() -> None:
    from mlguard.config.reference import markdown_table

    click.echo(markdown_table())
