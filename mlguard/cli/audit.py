"""``mlguard audit verify|export|bundle|shred|purge|rewrap``.

Exit codes: 0 ok (shred: also a subject already shredded, said so, no second tombstone); 1 integrity failure
(verify), a refusal (retention), an unknown subject or a failed token vault erasure (shred); 2 usage (bad or missing
arguments; a store, keyring or named token vault that cannot be opened).

shred and purge take what they need from ``--config`` as serve does (store, keyring, witness, and for shred the
token vault), so the operator names one file, not four paths that must agree with the running guard.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import click

from mlguard.cli._root import cli
from mlguard.errors import ConfigError, MLGuardError, RetentionRefused

STORE_HELP = "Audit store URL: sqlite:///PATH or postgresql://... (?schema=NAME)."
JOBS_HELP = ("Worker processes reading the store (default: one per core, at most 8; each reads windows of "
             "4,096 records, and the result is the one a single process gives).")


@contextmanager
def _progress(total: int | None, desc: str) -> Iterator[Callable[[int], None]]:
    from tqdm import tqdm

    # No monitor thread: verify and export fork worker processes while the bar is open, and a process should
    # not fork while another of its threads may hold a lock (Python 3.12+ warns about it).
    tqdm.monitor_interval = 0
    bar = tqdm(total=total, desc=desc, unit="rec", file=sys.stderr, disable=None, mininterval=0.5)
    try:
        yield bar.update
    finally:
        bar.close()


def _open(url: str) -> Any:
    from mlguard.audit.store.base import open_store

    try:
        return open_store(url, create=False)
    except MLGuardError as exc:
        raise click.UsageError(str(exc)) from None


def _open_to_write(url: str, keys: Any) -> Any:
    """The store, opened for a command that destroys keys and appends (shred, purge), refused (usage error)
    when ``keys`` shares no key with its log, as serve refuses it (``check_keyring_fits``). Without it a
    keyring of another deployment made shred look for a pseudonym the log never held and blame the subject id,
    and would have signed the tombstone's checkpoint with a key the log does not know."""
    from mlguard.audit.stage import check_keyring_fits

    store = _open(url)
    try:
        check_keyring_fits(store, keys)
    except MLGuardError as exc:
        store.close()
        raise click.UsageError(str(exc)) from None
    return store


def _keyring(path: Path | None, given: _Given | None = None) -> Any:
    """The keyring at ``path``; else env MLGUARD_KEYRING; else the config's ``audit.keyring`` (the order serve
    uses: the environment wins over the file)."""
    from mlguard.audit.reader import load_keyring
    from mlguard.keys import ENV_VAR

    if path is None and given is not None and not os.environ.get(ENV_VAR):
        path = given.keyring
    try:
        return load_keyring(path)
    except MLGuardError as exc:
        raise click.UsageError(str(exc)) from None


@cli.group(help="Verify, export, bundle, shred, purge and re-wrap the audit trail.")
def audit() -> None:
    """The ``mlguard audit`` group."""


@audit.command("verify", help="Check the log's integrity without any decryption key. Exit 0 intact, 1 not, 2 usage. "
                              "Without --pubkey, checkpoints are checked against the public keys the store or "
                              "bundle carries itself: that proves consistency, not who signed it.")
@click.option("--store", "store_url", help=STORE_HELP)
@click.option("--bundle", "bundle", type=click.Path(path_type=Path, dir_okay=False), help="Evidence bundle.")
@click.option("--witness", type=click.Path(path_type=Path, dir_okay=False), help="Witness file of checkpoints.")
@click.option("--pubkey", "pubkeys", multiple=True,
              help="Trusted Ed25519 public key (64 hex digits, from `mlguard keys show`); repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--jobs", type=click.IntRange(min=1), help=JOBS_HELP)
@click.pass_context
def verify(ctx: click.Context, store_url: str | None, bundle: Path | None, witness: Path | None,
           pubkeys: tuple[str, ...], as_json: bool, jobs: int | None) -> None:
    from mlguard.audit.bundle import Bundle
    from mlguard.audit.chain import Witness, WitnessCorrupt
    from mlguard.audit.verify import VerifyResult, verify_log, verify_store

    if (store_url is None) == (bundle is None):
        raise click.UsageError("give exactly one of --store URL or --bundle FILE")
    pinned = [_pubkey(p) for p in pubkeys]
    wit = None
    if witness is not None:
        if not witness.exists():
            raise click.UsageError(f"witness file {witness} does not exist")
        try:
            wit = Witness.read(witness)
        except WitnessCorrupt as exc:  # evidence damaged or edited: an integrity failure, not a usage error
            _report(ctx, VerifyResult(ok=False, problem=str(exc), expected="a checkpoint entry on every line",
                                      calculated=f"line {exc.line}: {exc.why}"), as_json, wit)
        except OSError as exc:
            raise click.UsageError(f"cannot read witness file {witness} ({exc.strerror})") from None
    store = None
    try:
        if bundle is not None:
            if not bundle.exists():
                raise click.UsageError(f"bundle {bundle} does not exist")
            b = Bundle(bundle)
            rows, head, cps, keys, total = b.rows(), b.head, b.checkpoints, b.keys, b.count
        else:
            store = _open(str(store_url))  # a clear usage error for a wrong URL; the keys to pin; the total
            keys, total = store.public_keys(), store.head()[0]
            store.close()
            store = None
        trusted = _trusted(pinned, keys) if pinned else None
        with _progress(total, "verify") as tick:
            if bundle is not None:
                res = verify_log(rows, head=head, checkpoints=cps, public_keys=keys, trusted=trusted, witness=wit,
                                 progress=tick, source="bundle")
            else:
                res = verify_store(str(store_url), witness=wit, trusted=trusted, progress=tick, jobs=jobs)
    except (MLGuardError, ValueError, KeyError) as exc:
        click.echo(f"INTEGRITY FAILURE: the log cannot be read ({type(exc).__name__}: {exc})", err=True)
        ctx.exit(1)
    finally:
        if store is not None:
            store.close()
    _report(ctx, res, as_json, wit)


def _pubkey(text: str) -> bytes:
    """A --pubkey value: a raw Ed25519 public key in hex (what `mlguard keys show` prints)."""
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise click.UsageError(f"--pubkey takes an Ed25519 public key as 64 hex digits, not {text[:80]!r}")
    return key


def _trusted(pinned: list[bytes], carried: dict[str, bytes]) -> dict[str, bytes]:
    """The pinned keys, named by the key id the log gives them where it carries them, else by a hex prefix.

    Why not the log's keys filtered by the pins (what this did): a pinned key the log does not carry then
    vanished, and the witness's genuine entries signed by it read as signed by an untrusted key. The pins are
    trusted whatever the log carries; its key ids only name them."""
    names = {pub: kid for kid, pub in carried.items()}
    return {names.get(pub, f"pinned key {pub.hex()[:16]}..."): pub for pub in pinned}


def _report(ctx: click.Context, res: Any, as_json: bool, wit: list[dict[str, Any]] | None) -> None:
    """Print a verdict and exit: 0 intact, 1 an integrity failure (its seq when it has one, expected and
    calculated)."""
    if as_json:
        click.echo(json.dumps(res.as_dict()))
    if res.ok:
        if not as_json:
            seen = _count(res.checkpoints, "checkpoint")
            if wit is not None:  # counted apart: the witness mostly repeats the store's checkpoints
                seen += f" and {_count(res.witness_entries, 'witness entry', 'witness entries')}"
            click.echo(f"OK: {res.records} records, {seen} verified")
            for note in res.notes:
                click.echo(f"note: {note}")
        ctx.exit(0)
    if not as_json:
        click.echo(f"INTEGRITY FAILURE{'' if res.seq is None else f' at seq {res.seq}'}: {res.problem}")
        click.echo(f"  expected:   {res.expected}")
        click.echo(f"  calculated: {res.calculated}")
    ctx.exit(1)


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


@audit.command("export", help="Decrypt and export records (streaming, constant memory).")
@click.option("--store", "store_url", required=True, help=STORE_HELP)
@click.option("--keyring", type=click.Path(path_type=Path, dir_okay=False), help="Keyring (else env).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "parquet"]), default="jsonl",
              show_default=True)
@click.option("--since", help="ISO 8601 start (inclusive).")
@click.option("--until", help="ISO 8601 end (exclusive).")
@click.option("--route", help="Only this route path.")
@click.option("--subject", help="Only this subject id (matched by its pseudonym).")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.option("--jobs", type=click.IntRange(min=1), help=JOBS_HELP)
def export(store_url: str, keyring: Path | None, fmt: str, since: str | None, until: str | None,
           route: str | None, subject: str | None, out: Path, jobs: int | None) -> None:
    from mlguard.audit.export import Format, export_store, subject_not_found_note

    keys = _keyring(keyring)
    store = _open(store_url)  # a clear usage error for a wrong URL; the total for the progress bar
    try:
        total = store.count()
    finally:
        store.close()
    with _progress(total, "export") as tick:
        n = export_store(store_url, keys, out, cast("Format", fmt), since=_ts(since), until=_ts(until),
                         route=route, subject=subject, jobs=jobs, progress=tick)
    click.echo(f"exported {n} records to {out}", err=True)
    if n == 0 and subject is not None:
        # Still exit 0 (an empty answer is an answer), but a mistyped id in a subject access request must not
        # read as "we hold nothing": say what was matched and how (subject_not_found_note).
        click.echo(subject_not_found_note(store_url, keys, subject, since=_ts(since), until=_ts(until),
                                          route=route), err=True)


def _ts(text: str | None) -> str | None:
    """Normalise a user's ISO 8601 time to the store's sortable UTC form."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.UsageError(f"not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@audit.command("bundle", help="Write an evidence bundle: a zip file (records, checkpoints, public keys, README) that "
                              "`mlguard audit verify --bundle FILE` checks offline.")
@click.option("--store", "store_url", required=True, help=STORE_HELP)
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True)
def bundle_cmd(store_url: str, out: Path) -> None:
    from mlguard.audit.bundle import write_bundle

    store = _open(store_url)
    try:
        with _progress(store.head()[0], "bundle") as tick:
            n = write_bundle(store, out, progress=tick)
    finally:
        store.close()
    click.echo(f"bundled {n} records into {out}", err=True)


class _Given:
    """What the operator named: policies (--policy, else the config's list), and from --config its retention
    maximum, witness file, store URL, keyring and token vault, relative paths resolved against the config's
    directory as serve resolves them (so ``--config`` alone names what the running guard uses)."""

    def __init__(self, config: Path | None, names: tuple[str, ...]) -> None:
        self.names: list[str] = list(names)
        self.base_dir: Path | None = None
        self.retention_max: str | None = None
        self.witness: Path | None = None
        self.store_url: str | None = None
        self.keyring: Path | None = None
        self.vault: Path | None = None
        self.vault_named = False  # pii_engine.vault_path written in the config, not its default
        if config is not None:
            from mlguard.audit.stage import resolve_store_url
            from mlguard.config import load_config
            from mlguard.runtime import located

            try:
                cfg = load_config(config)
            except ConfigError as exc:  # the file's content is wrong: exit 1 like serve and config check
                raise located(exc, config) from None
            except MLGuardError as exc:
                raise click.UsageError(str(exc)) from None
            base = cfg.base_dir
            self.names = self.names or list(cfg.policies)
            self.base_dir, self.retention_max = base, cfg.retention.max
            self.witness = cfg.audit.witness_path(base)
            self.store_url = resolve_store_url(cfg.audit.store, base)
            self.keyring = _under(cfg.audit.keyring, base)
            self.vault = _under(Path(cfg.pii_engine.vault_path), base)
            self.vault_named = "vault_path" in cfg.pii_engine.model_fields_set

    def store(self, url: str | None) -> str:
        """--store, else the config's ``audit.store``."""
        if url is not None:
            return url
        if self.store_url is None:
            raise click.UsageError("give --store URL, or --config FILE (its audit.store)")
        return self.store_url

    def policy(self, recorded: AbstractSet[str] = frozenset()) -> Any:
        """The effective policy of the named policies and of ``recorded``, the ids the records themselves name.

        Why the records' own: a retention minimum binds the records written under it, whatever the operator
        remembers to pass. Shredding a subject with no --policy, or purging with --policy gdpr, destroyed records
        written under ecoa inside its 25-month minimum. A recorded id that is not a bundled policy (a file of the
        deployment's) must come through --config or --policy, or the operation is refused."""
        from mlguard.policy import resolve_policies

        try:
            policy = resolve_policies(self.names, base_dir=self.base_dir) if self.names else None
        except MLGuardError as exc:
            raise click.UsageError(str(exc)) from None
        missing = set(recorded) - set(policy.ids if policy is not None else ())
        if not missing:
            return policy
        try:
            return resolve_policies(self.names + sorted(missing), base_dir=self.base_dir)
        except MLGuardError as exc:
            raise RetentionRefused(
                f"refused: the records name policies {', '.join(sorted(recorded))}, not all of which could be "
                f"loaded ({exc}); pass the deployment's --config (or --policy FILE), or --override-retention "
                "under a legal obligation") from None


def _under(path: Path | None, base: Path | None) -> Path | None:
    return path if path is None or path.is_absolute() or base is None else base / path


def _recorded_policies(keys: Any, store: Any, *, subject: str | None = None, until: str | None = None) -> set[str]:
    """The policy ids named by the records about to become unreadable (a subject's, or those before ``until``);
    shredded records name none (their content is gone)."""
    from mlguard.audit.reader import AuditReader

    ids: set[str] = set()
    reader = AuditReader(store, keys)
    for rec in reader.iter_records(until=until, subject=subject):
        pol = rec.get("policies")
        if isinstance(pol, dict):
            ids.update(str(i) for i in pol.get("ids") or ())
    return ids


def _writer(store: Any, keys: Any, witness: Path | None) -> Any:
    from mlguard.audit.writer import AuditWriter

    return AuditWriter(store, keys, witness=witness)


def _open_vault(option: Path | None, given: _Given, keys: Any) -> tuple[Any, str | None]:
    """The token vault a shred erases the subject from, opened (and its key checked) before anything is destroyed;
    (None, a note saying why) when there is none to erase from.

    --vault, else the config's ``pii_engine.vault_path``. A vault named (by either) that cannot be opened or read
    with this keyring is a usage error, never skipped: an erasure that silently left the subject's identifiers in
    the vault is the failure this guards against. Only the config's default path may be absent (no ``token``
    operator ever ran there)."""
    from mlguard.pii.vault import Vault

    path, named = (option, True) if option is not None else (given.vault, given.vault_named)
    if path is None:
        return None, ("note: no token vault given (--vault FILE, or --config FILE for pii_engine.vault_path): "
                      "tokens issued for this subject, if any, were not erased")
    if not named and not path.exists():
        return None, f"note: no token vault at {path} (pii_engine.vault_path): none to erase"
    try:
        vault = Vault(path, keys, create=False)
    except MLGuardError as exc:
        raise click.UsageError(f"{exc} ({'--vault' if option is not None else 'pii_engine.vault_path'})") from None
    try:
        vault.check_key()
    except MLGuardError as exc:
        vault.close()
        raise click.UsageError(f"token vault {path}: {exc} (is it the keyring the guard runs with?)") from None
    return vault, None


def _open_fairness(option: str | None, config: Path | None, keys: Any) -> tuple[Any, str | None]:
    """The shared fairness store a shred erases the subject's decisions from, connected before anything is
    destroyed; (None, a note saying why) when there is none to erase from. The same pattern as the token vault.

    --fairness-store, else the config's ``fairness.shared_store``. Why a shred must reach it: the store keeps one
    row per decision, the person's protected groups sealed under a keyring-wide key (not the subject's data key,
    so destroying the data keys leaves them readable) and counted in the shared window; without this a shredded
    subject kept feeding the fairness metrics, and feedback on their decisions was still joined. A store named
    (by either) that cannot be reached is a usage error, never skipped. Without a shared store the windows live in
    each worker's memory: nothing is stored to erase, and a running guard refuses feedback on an erased decision
    (410) and takes it out of its window then; otherwise it leaves the window as newer decisions come in."""
    from mlguard.fairness.shared_pg import SharedDecisions

    url, where = option, "--fairness-store"
    if url is None and config is not None:
        from mlguard.config import load_config
        from mlguard.runtime import located

        try:
            cfg = load_config(config)
        except ConfigError as exc:  # the file's content is wrong: exit 1 like serve and config check
            raise located(exc, config) from None
        except MLGuardError as exc:
            raise click.UsageError(str(exc)) from None
        url, where = cfg.fairness.shared_store, "fairness.shared_store"
        if url is None:
            monitored = cfg.fairness.enabled and any(r.protected for r in cfg.routes)
            return None, ("note: fairness windows are per worker, in memory (no fairness.shared_store): nothing "
                          "stored to erase; a running guard refuses feedback on this subject's decisions and "
                          "they leave its window as newer decisions come in") if monitored else None
    if url is None:
        return None, ("note: no fairness store given (--fairness-store URL, or --config FILE for "
                      "fairness.shared_store): decisions in a shared fairness window, if any, were not erased")
    try:
        return SharedDecisions(url, keys.secret("fairness.shared")), None
    except MLGuardError as exc:  # the URL may hold a password: named by where it came from, never shown
        raise click.UsageError(f"{exc} ({where})") from None


def _fairness_said(erased: int | None) -> str:
    if erased is None:
        return ""
    return f", {_count(erased, 'fairness window decision')} erased"


def _vault_said(erased: Any) -> str:
    if erased is None:
        return ""
    said = f", {_count(erased.erased, 'token vault entry', 'token vault entries')} erased"
    if erased.kept:
        said += f" ({erased.kept} kept: shared with other subjects, who still use them)"
    return said


@audit.command("shred", help="Destroy a subject's data keys (crypto-shredding), erase its token vault entries and "
                             "its decisions in the shared fairness window, and append a tombstone. Exit 0 shredded "
                             "(or already shredded), 1 refused or unknown subject, 2 usage.")
@click.option("--store", "store_url", help=STORE_HELP + " Default: the config's audit.store.")
@click.option("--keyring", type=click.Path(path_type=Path, dir_okay=False),
              help="Keyring (else env MLGUARD_KEYRING, else the config's audit.keyring).")
@click.option("--subject", required=True, help="The subject id as the requests carried it.")
@click.option("--witness", type=click.Path(path_type=Path, dir_okay=False), help="Witness file to append to.")
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False),
              help="mlguard.yaml: its policies, and its store, keyring, witness, token vault and shared fairness "
                   "store unless given.")
@click.option("--vault", "vault_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Token vault file (else the config's pii_engine.vault_path).")
@click.option("--fairness-store", "fairness_url",
              help="Shared fairness store, postgresql://... (else the config's fairness.shared_store).")
@click.option("--policy", "policies", multiple=True, help="Policy name or file (repeatable).")
@click.option("--override-retention", is_flag=True, help="Shred inside a legal minimum (a legal order).")
@click.pass_context
def shred(ctx: click.Context, store_url: str | None, keyring: Path | None, subject: str, witness: Path | None,
          config: Path | None, vault_path: Path | None, fairness_url: str | None, policies: tuple[str, ...],
          override_retention: bool) -> None:
    from mlguard.audit.record import event, pseudonym
    from mlguard.audit.retention import check_shred
    from mlguard.ids import uuid7

    given = _Given(config, policies)
    url = given.store(store_url)
    keys = _keyring(keyring, given)
    vault, no_vault = _open_vault(vault_path, given, keys)
    try:
        fairness, no_fairness = _open_fairness(fairness_url, config, keys)
    except BaseException:
        if vault is not None:
            vault.close()
        raise
    erased = None
    fair_erased: int | None = None
    store = None
    try:
        store = _open_to_write(url, keys)
        subj = str(pseudonym(keys, subject))
        days = store.subject_periods(subj)
        if days and not override_retention:
            try:
                policy = given.policy(_recorded_policies(keys, store, subject=subject))
                if policy is not None:
                    check_shred(policy, datetime.now(UTC), days)
            except RetentionRefused as exc:
                click.echo(str(exc), err=True)
                ctx.exit(1)
        if vault is not None:  # before the keys: a failure here leaves a shred that can simply be run again
            try:
                erased = vault.forget(subject)
            except MLGuardError as exc:
                click.echo(f"token vault erasure failed, nothing shredded: {exc}", err=True)
                ctx.exit(1)
        if fairness is not None:  # before the keys too: the audit ids are read from the store's clear columns
            try:
                fair_erased = fairness.erase([row.audit_id for row in store.iter_rows(subject=subj)
                                              if row.kind == "exchange"])
            except MLGuardError as exc:
                click.echo(f"fairness window erasure failed, no data keys destroyed: {exc}", err=True)
                ctx.exit(1)
        if no_vault is not None:
            click.echo(no_vault, err=True)
        if no_fairness is not None:
            click.echo(no_fairness, err=True)
        if erased is not None and not erased.scrubbed:
            click.echo("note: the token vault's WAL could not be checkpointed (a reader held it): the erased "
                       "entries' old pages stay in it until the next checkpoint; run this shred again later",
                       err=True)
        if not days:
            # No data key left: nothing to shred and nothing to record (a second tombstone would claim a second
            # erasure). Unknown to the store and the vault alike: most likely a wrong id, so not a success.
            if not any(True for _ in store.iter_rows(subject=subj)) and not (erased and (erased.erased or
                                                                                    erased.kept)):
                click.echo(f"no records of this subject (pseudonym {subj}): nothing shredded; check the id", err=True)
                ctx.exit(1)
            click.echo(f"subject {subj} already shredded: no data keys left, no tombstone appended"
                       f"{_vault_said(erased)}{_fairness_said(fair_erased)}")
            return
        gone = store.delete_data_keys(subject=subj)
        w = _writer(store, keys, witness or given.witness)
        w.append_now([event(str(uuid7()), time.time(), "tombstone",
                            {"reason": "erasure", "keys_destroyed": len(gone), "days": days,
                             "vault_entries_erased": None if erased is None else erased.erased,
                             "fairness_decisions_erased": fair_erased,
                             "override_retention": override_retention}, subject=subj, clear=True)])
        w.checkpoint()
    finally:
        if store is not None:
            store.close()
        if vault is not None:
            vault.close()
        if fairness is not None:
            fairness.close()
    click.echo(f"shredded subject {subj}: {len(gone)} data keys destroyed{_vault_said(erased)}"
               f"{_fairness_said(fair_erased)}, tombstone appended")
    click.echo(_copies_reminder(keys.active_kek_id()), err=True)


def _copies_reminder(kek_id: str) -> str:
    """What a shred does not reach, said after every erasure that destroyed keys.

    Why: the operator who answers an erasure request reads "shredded" and closes it, while copies made before
    it still give the records back: a database backup holds the subject's data keys wrapped under a KEK this
    keyring still has; an export is decrypted already; an evidence bundle holds the sealed records (readable
    with such a backup and this keyring) and, in clear, the subject's pseudonym and times. Rotating the KEK,
    re-wrapping the live store and retiring the old KEK (the commands of mlguard/cli/keys.py and rewrap below)
    leaves the backups' data keys wrapped under a KEK no keyring holds. Key ids only, never material."""
    return ("reminder: copies made before this erasure still hold the subject's records. Database backups keep "
            f"its data keys, wrapped under KEK {kek_id}, readable with this keyring; exports are decrypted files "
            "(delete them, or keep them under the retention this erasure requires); evidence bundles keep the "
            "sealed records (readable with such a backup and this keyring) and, readable by anyone, the subject's "
            "pseudonym, times and routes. To make earlier database backups unreadable: `mlguard keys rotate "
            "--keyring FILE` (a keyring in MLGUARD_KEYRING: with --out FILE or --print-env), restart every "
            "process that writes, `mlguard audit rewrap --store URL --keyring FILE`, then `mlguard keys retire "
            f"OLD_KEK --store URL --keyring FILE` for {kek_id} and every other old KEK `mlguard keys show` lists "
            "(--store for every store this keyring serves); and destroy the copies of the old keyring (file "
            "backups, earlier MLGUARD_KEYRING values), which still hold those KEKs.")


@audit.command("purge", help="Apply the policies' retention: shred records past the maximum.")
@click.option("--store", "store_url", help=STORE_HELP + " Default: the config's audit.store.")
@click.option("--keyring", type=click.Path(path_type=Path, dir_okay=False),
              help="Keyring (else env MLGUARD_KEYRING, else the config's audit.keyring).")
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False),
              help="mlguard.yaml: its policies and retention.max, and its store, keyring and witness unless given.")
@click.option("--policy", "policies", multiple=True, help="Policy name or file (repeatable).")
@click.option("--max", "configured_max", help="The deployment's own retention maximum (ISO 8601, e.g. P2Y).")
@click.option("--before", help="Explicit cut-off date (refused inside a legal minimum).")
@click.option("--witness", type=click.Path(path_type=Path, dir_okay=False), help="Witness file to append to.")
@click.option("--dry-run", is_flag=True, help="Say what would be shredded, change nothing.")
@click.pass_context
def purge(ctx: click.Context, store_url: str | None, keyring: Path | None, config: Path | None,
          policies: tuple[str, ...], configured_max: str | None, before: str | None, witness: Path | None,
          dry_run: bool) -> None:
    from mlguard.audit.record import event
    from mlguard.audit.retention import purge_plan
    from mlguard.ids import uuid7

    given = _Given(config, policies)
    configured_max = configured_max or given.retention_max
    if not given.names:
        raise click.UsageError("purge needs the policies: --config FILE or --policy NAME")
    cut = None
    if before is not None:
        stamp = _ts(before)
        cut = datetime.strptime(str(stamp), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    url = given.store(store_url)
    keys = _keyring(keyring, given)
    store = _open_to_write(url, keys)
    try:
        try:
            now = datetime.now(UTC)
            plan = purge_plan(given.policy(), now, before=cut, configured_max=configured_max)
            if plan.before_day is not None:
                # the records this would make unreadable may name more policies than were given: plan again
                # with theirs too (a longer minimum refuses an explicit cut-off, or moves the maximum's)
                recorded = _recorded_policies(keys, store, until=plan.before_day)
                plan = purge_plan(given.policy(recorded), now, before=cut, configured_max=configured_max)
        except RetentionRefused as exc:
            click.echo(str(exc), err=True)
            ctx.exit(1)
        except MLGuardError as exc:
            raise click.UsageError(str(exc)) from None
        if plan.before_day is None:
            click.echo(f"nothing to purge: {plan.reason}")
            return
        if dry_run:
            click.echo(f"would shred data keys of days before {plan.before_day} ({plan.reason})")
            return
        gone = store.delete_data_keys(before_period=plan.before_day)
        w = _writer(store, keys, witness or given.witness)
        w.append_now([event(str(uuid7()), time.time(), "tombstone",
                            {"reason": "retention", "before": plan.before_day, "rule": plan.reason,
                             "keys_destroyed": len(gone)}, clear=True)])
        w.checkpoint()
    finally:
        store.close()
    click.echo(f"purged: {len(gone)} data keys of days before {plan.before_day} destroyed ({plan.reason})")


@audit.command("rewrap", help="Re-wrap every data key under the keyring's active KEK (after `mlguard keys rotate` "
                              "and a restart of the writers), so old KEKs can be retired. Records do not change.")
@click.option("--store", "store_url", required=True, help=STORE_HELP)
@click.option("--keyring", type=click.Path(path_type=Path, dir_okay=False), help="Keyring (else env).")
@click.option("--batch", default=1000, show_default=True, type=click.IntRange(1, 100_000),
              help="Data keys per transaction.")
def rewrap_cmd(store_url: str, keyring: Path | None, batch: int) -> None:
    from mlguard.audit.rekey import rewrap

    keys = _keyring(keyring)
    store = _open(store_url)
    try:
        active = keys.active_kek_id()
        todo = sum(n for k, n in store.data_key_counts().items() if k != active)
        with _progress(todo, "rewrap") as tick:
            res = rewrap(store, keys, batch=batch, progress=tick)
    except MLGuardError as exc:
        raise click.UsageError(str(exc)) from None
    finally:
        store.close()
    click.echo(f"re-wrapped {res.rewrapped} data keys under {res.active}")
    if res.remaining:
        left = ", ".join(f"{k}: {n}" for k, n in sorted(res.remaining.items()))
        click.echo(f"still under older KEKs ({left}): a writer still runs with the old keyring; restart it and "
                   "run this again", err=True)
