"""``mlguard keys init|rotate|retire|show``: the keyring on the command line."""

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


@keys.command("retire", help="Remove an old KEK from the keyring once no data key in the given stores is "
                             "wrapped under it (run `mlguard audit rewrap` first).")
@click.argument("kek_id")
@KEYRING_OPTION
@click.option("--store", "stores", multiple=True, required=True,
              help="Every audit store this keyring serves (repeatable): each is checked for keys under KEK_ID.")
def retire(kek_id: str, path: Path, stores: tuple[str, ...]) -> None:
    from mlguard.audit.store.base import open_store
    from mlguard.errors import MLGuardError

    try:
        ring = Keyring.load(path)
        ring.check_retirable(kek_id)
        for url in stores:
            store = open_store(url, create=False)
            try:
                n = store.data_key_counts().get(kek_id, 0)
            finally:
                store.close()
            if n:
                raise click.UsageError(f"{n} data keys in store {_where(url)} are still wrapped under {kek_id}; "
                                       f"run: mlguard audit rewrap --store URL --keyring {path}")
        ring.retire(kek_id)
    except MLGuardError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"retired {kek_id} from {path}; active KEK {ring.active_kek_id()}")


def _where(url: str) -> str:
    """A store URL fit for a message: without user, password and query (a password must not reach a terminal)."""
    from urllib.parse import urlsplit

    if url.startswith("sqlite:///"):
        return url
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{parts.path}"


@keys.command("show", help="Key ids and public signing keys (never secret material), as JSON.")
@KEYRING_OPTION
def show(path: Path) -> None:
    try:
        ring = Keyring.load(path)
    except KeyringError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(json.dumps(ring.describe(), indent=2))
