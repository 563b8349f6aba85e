"""``mlguard keys init|rotate|retire|show``: the keyring on the command line.

Which keyring: ``--keyring FILE`` when given; else env MLGUARD_KEYRING when set (the precedence of the ``audit``
commands and of ``serve``); else ``./mlguard.keyring``. A keyring from the environment has no file to rewrite, so
``rotate`` and ``retire`` on it write the new keyring where the user says: ``--out FILE`` (0600, an existing file
only with ``--force``) and/or ``--print-env`` (its base64 on stdout, the one case where secret material is
printed, because it was asked for); what to do next goes to stderr, so stdout holds nothing else.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from mlguard.cli._root import cli
from mlguard.errors import KeyringError
from mlguard.keys import ENV_VAR, Keyring

DEFAULT_KEYRING = Path("mlguard.keyring")


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


KEYRING_OPTION = click.option("--keyring", "path", type=click.Path(path_type=Path, dir_okay=False), default=None,
                              help=f"Keyring file. [default: env {ENV_VAR} when set, else {DEFAULT_KEYRING}]")
OUT_OPTION = click.option("--out", "out", type=click.Path(path_type=Path, dir_okay=False), default=None,
                          help=f"With a keyring from env {ENV_VAR}: write the new keyring to this file (0600).")
FORCE_OPTION = click.option("--force", is_flag=True, help="Let --out replace an existing file.")
PRINT_ENV_OPTION = click.option("--print-env", "print_env", is_flag=True,
                                help=f"With a keyring from env {ENV_VAR}: print the new value of {ENV_VAR} "
                                     "(secret material) on stdout.")


def _open(path: Path | None) -> Keyring:
    """The keyring these commands act on: ``--keyring`` wins, then env MLGUARD_KEYRING, then ./mlguard.keyring.
    A keyring from the environment has ``path`` None."""
    env = os.environ.get(ENV_VAR)
    if path is None and env:
        return Keyring.from_env(env)
    return Keyring.load(path or DEFAULT_KEYRING)


def _check_destination(ring: Keyring, out: Path | None, force: bool, print_env: bool) -> None:
    """Before any work: a keyring from the environment needs somewhere to put the new one; a file keyring is
    rewritten in place and takes none of these options."""
    if ring.path is not None:
        if out is not None or print_env or force:
            raise click.UsageError(f"--out, --force and --print-env apply to a keyring from env {ENV_VAR}; "
                                   f"{ring.path} is rewritten in place")
        return
    if out is None and not print_env:
        hint = (f" (to change the file {DEFAULT_KEYRING} instead: --keyring {DEFAULT_KEYRING})"
                if DEFAULT_KEYRING.exists() else "")
        raise click.UsageError(f"the keyring comes from env {ENV_VAR}, which cannot be rewritten from here: give "
                               f"--out FILE (the new keyring, mode 0600) or --print-env (its base64 on stdout){hint}")
    if force and out is None:
        raise click.UsageError("--force applies to --out")
    if out is not None and out.exists() and not force:
        raise click.UsageError(f"{out} already exists; not overwritten (--force to replace it)")


def _deliver(new: Keyring, out: Path | None, force: bool, print_env: bool, done: str) -> None:
    # ``done``: what was done, as the first sentence of the message (no key material: ids only)
    """Hand over the new keyring of an environment keyring, and say what to do next (on stderr)."""
    if out is not None:
        try:
            new.save(out, overwrite=force)
        except KeyringError as exc:
            raise click.UsageError(str(exc)) from None
    if print_env:
        click.echo(new.env_value())
    where = f"written to {out} (mode 0600)" if out is not None else f"its {ENV_VAR} value printed on stdout"
    value = f"$(base64 -w0 {out})" if out is not None else "the printed value"
    click.echo(f"{done}; the new keyring is {where}. The environment still holds "
               f"the old one: next, set {ENV_VAR} to {value} wherever it is stored (secret store, unit file), "
               "restart every process that uses it, and run later mlguard commands with the new value"
               + (f"; then delete {out}" if out is not None else "") + ".", err=True)


@keys.command("rotate", help="Add a new active KEK and signing key; old keys stay to read older records. "
                             f"A keyring from env {ENV_VAR} needs --out FILE or --print-env.")
@KEYRING_OPTION
@OUT_OPTION
@FORCE_OPTION
@PRINT_ENV_OPTION
def rotate(path: Path | None, out: Path | None, force: bool, print_env: bool) -> None:
    try:
        ring = _open(path)
        _check_destination(ring, out, force, print_env)
        if ring.path is None:
            new = ring.rotated()
        else:
            ring.rotate()
            new = ring
    except KeyringError as exc:
        raise click.UsageError(str(exc)) from None
    kek, sig = new.active_kek_id(), new.signing_key_id()
    if ring.path is None:
        _deliver(new, out, force, print_env,
                 f"rotated the keyring from env {ENV_VAR}: new KEK {kek}, new signing key {sig}")
    else:
        click.echo(f"rotated {ring.path}: new KEK {kek}, new signing key {sig}")


@keys.command("retire", help="Remove an old KEK from the keyring once no data key in the given stores is "
                             "wrapped under it (run `mlguard audit rewrap` first). A keyring from env "
                             f"{ENV_VAR} needs --out FILE or --print-env.")
@click.argument("kek_id")
@KEYRING_OPTION
@click.option("--store", "stores", multiple=True, required=True,
              help="Every audit store this keyring serves (repeatable): each is checked for keys under KEK_ID.")
@OUT_OPTION
@FORCE_OPTION
@PRINT_ENV_OPTION
def retire(kek_id: str, path: Path | None, stores: tuple[str, ...], out: Path | None, force: bool,
           print_env: bool) -> None:
    from mlguard.audit.store.base import open_store
    from mlguard.errors import MLGuardError

    try:
        ring = _open(path)
        _check_destination(ring, out, force, print_env)
        ring.check_retirable(kek_id)
        source = f"--keyring {ring.path}" if ring.path is not None else f"(env {ENV_VAR})"
        for url in stores:
            store = open_store(url, create=False)
            try:
                n = store.data_key_counts().get(kek_id, 0)
            finally:
                store.close()
            if n:
                raise click.UsageError(f"{n} data keys in store {_where(url)} are still wrapped under {kek_id}; "
                                       f"run: mlguard audit rewrap --store URL {source}")
        if ring.path is None:
            new = ring.without_kek(kek_id)
        else:
            ring.retire(kek_id)
    except MLGuardError as exc:
        raise click.UsageError(str(exc)) from None
    if ring.path is None:
        _deliver(new, out, force, print_env, f"retired {kek_id} from the keyring from env {ENV_VAR}; active KEK "
                                             f"{new.active_kek_id()}")
    else:
        click.echo(f"retired {kek_id} from {ring.path}; active KEK {ring.active_kek_id()}")


def _where(url: str) -> str:
    """A store URL fit for a message: without user, password and query (a password must not reach a terminal)."""
    from urllib.parse import urlsplit

    if url.startswith("sqlite:///"):
        return url
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{parts.path}"


@keys.command("show", help="Key ids and public signing keys (never secret material), as JSON. Reads "
                           f"--keyring FILE, else env {ENV_VAR}, else {DEFAULT_KEYRING}.")
@KEYRING_OPTION
def show(path: Path | None) -> None:
    try:
        ring = _open(path)
    except KeyringError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(json.dumps(ring.describe(), indent=2))
