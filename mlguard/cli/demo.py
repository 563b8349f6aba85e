"""``mlguard demo``: run the guarded credit-scoring example and print what the guard did."""

from __future__ import annotations

import click

from mlguard.cli._root import cli


@cli.command(help="Start the guarded example on a free localhost port, send the sample applications and "
                  "print a summary: redactions, one decision with its explanation, fairness, audit check.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Send only the first N applications.")
@click.option("--hiring/--no-hiring", default=True, show_default=True,
              help="Also run the hiring-screen example (nyc_ll144, eeoc_four_fifths).")
@click.pass_context
def demo(ctx: click.Context, limit: int | None, hiring: bool) -> None:
    from mlguard.demo import run_demo

    ctx.exit(run_demo(click.echo, limit, hiring))
