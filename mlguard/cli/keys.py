"""``mlguard keys init|rotate|show``: the keyring on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mlguard.cli._root import cli
from mlguard.errors import KeyringError
from mlguard.keys import Keyring


@cli.group(help="Create, rotate and inspect the keyring (KEKs, HKDF secrets, checkpoint signing keys).")
def keys() -> None:
    """The ``mlguard keys`` group."""


@keys.command("init", help="Create a new keyring file with mode 0600 (never overwrites).")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Keyring file to create.")
def init(out: Path) -> None:
    try:
        ring = Keyring.create(out)
    except KeyringError as exc:
        raise click.UsageError(str(exc)) from None
    d = ring.describe()
    click.echo(f"created {out} (mode 0600): KEK {d['active_kek']}, signing key {d['active_signing_key']}")


KEYRING_OPTION = click.option("--keyring", "path", type=click.Path(path_type=Path),
                              default=Path("mlguard.keyring"), show_default=True, help="Keyring file.")


@keys.command("rotate", help="Add a new active KEK and signing key; old keys stay to read older records.")
@KEYRING_OPTION
def rotate(path: Path) -> None:
    try:
        ring = Keyring.load(path)
        kek, sig = ring.rotate()
    except KeyringError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"rotated {path}: new KEK {kek}, new signing key {sig}")


@keys.command("show", help="Key ids and public signing keys (never secret material), as JSON.")
@KEYRING_OPTION
def show(path: Path) -> None:
    try:
        ring = Keyring.load(path)
    except KeyringError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(json.dumps(ring.describe(), indent=2))
