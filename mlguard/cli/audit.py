"""``mlguard audit verify|export|bundle|shred|purge|rewrap``.

Exit codes: 0 ok; 1 integrity failure (verify) or a refusal (retention); 2 usage (bad or missing arguments).
"""

from __future__ import annotations

import json
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
from mlguard.errors import MLGuardError, RetentionRefused

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


def _keyring(path: Path | None) -> Any:
    from mlguard.audit.reader import load_keyring

    try:
        return load_keyring(path)
    except MLGuardError as exc:
        raise click.UsageError(str(exc)) from None


@cli.group(help="Verify, export, bundle, shred, purge and re-wrap the audit trail.")
def audit() -> None:
    """The ``mlguard audit`` group."""


@audit.command("verify", help="Check the log's integrity without any decryption key. Exit 0 intact, 1 not.")
@click.option("--store", "store_url", help=STORE_HELP)
@click.option("--bundle", "bundle", type=click.Path(path_type=Path, dir_okay=False), help="Evidence bundle.")
@click.option("--witness", type=click.Path(path_type=Path, dir_okay=False), help="Witness file of checkpoints.")
@click.option("--pubkey", "pubkeys", multiple=True, help="Trusted Ed25519 public key (hex); repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--jobs", type=click.IntRange(min=1), help=JOBS_HELP)
@click.pass_context
def verify(ctx: click.Context, store_url: str | None, bundle: Path | None, witness: Path | None,
           pubkeys: tuple[str, ...], as_json: bool, jobs: int | None) -> None:
    from mlguard.audit.bundle import Bundle
    from mlguard.audit.chain import Witness
    from mlguard.audit.verify import verify_log, verify_store

    if (store_url is None) == (bundle is None):
        raise click.UsageError("give exactly one of --store URL or --bundle FILE")
    wit = None
    if witness is not None:
        if not witness.exists():
            raise click.UsageError(f"witness file {witness} does not exist")
        wit = Witness.read(witness)
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
        trusted = None
        if pubkeys:
            pinned = {p.lower() for p in pubkeys}
            trusted = {kid: pub for kid, pub in keys.items() if pub.hex() in pinned}
        with _progress(total, "verify") as tick:
            if bundle is not None:
                res = verify_log(rows, head=head, checkpoints=cps, public_keys=keys, trusted=trusted, witness=wit,
                                 progress=tick)
            else:
                res = verify_store(str(store_url), witness=wit, trusted=trusted, progress=tick, jobs=jobs)
    except (MLGuardError, ValueError, KeyError) as exc:
        click.echo(f"INTEGRITY FAILURE: the log cannot be read ({type(exc).__name__}: {exc})", err=True)
        ctx.exit(1)
    finally:
        if store is not None:
            store.close()
    if as_json:
        click.echo(json.dumps(res.as_dict()))
    if res.ok:
        if not as_json:
            click.echo(f"OK: {res.records} records, {res.checkpoints} checkpoints verified")
            for note in res.notes:
                click.echo(f"note: {note}")
        ctx.exit(0)
    if not as_json:
        click.echo(f"INTEGRITY FAILURE at seq {res.seq}: {res.problem}")
        click.echo(f"  expected:   {res.expected}")
        click.echo(f"  calculated: {res.calculated}")
    ctx.exit(1)


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
    from mlguard.audit.export import Format, export_store

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


@audit.command("bundle", help="Write an evidence bundle (records, checkpoints, public keys, README).")
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
    maximum and witness file."""

    def __init__(self, config: Path | None, names: tuple[str, ...]) -> None:
        self.names: list[str] = list(names)
        self.base_dir: Path | None = None
        self.retention_max: str | None = None
        self.witness: Path | None = None
        if config is not None:
            from mlguard.config import load_config

            try:
                cfg = load_config(config)
            except MLGuardError as exc:
                raise click.UsageError(str(exc)) from None
            self.names = self.names or list(cfg.policies)
            self.base_dir, self.retention_max = cfg.base_dir, cfg.retention.max
            self.witness = cfg.audit.witness_path(cfg.base_dir)

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


@audit.command("shred", help="Destroy a subject's data keys (crypto-shredding) and append a tombstone.")
@click.option("--store", "store_url", required=True, help=STORE_HELP)
@click.option("--keyring", type=click.Path(path_type=Path, dir_okay=False), help="Keyring (else env).")
@click.option("--subject", required=True, help="The subject id as the requests carried it.")
@click.option("--witness", type=click.Path(path_type=Path, dir_okay=False), help="Witness file to append to.")
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False), help="mlguard.yaml (its policies).")
@click.option("--policy", "policies", multiple=True, help="Policy name or file (repeatable).")
@click.option("--override-retention", is_flag=True, help="Shred inside a legal minimum (a legal order).")
@click.pass_context
def shred(ctx: click.Context, store_url: str, keyring: Path | None, subject: str, witness: Path | None,
          config: Path | None, policies: tuple[str, ...], override_retention: bool) -> None:
    from mlguard.audit.record import event, pseudonym
    from mlguard.audit.retention import check_shred
    from mlguard.ids import uuid7

    keys = _keyring(keyring)
    given = _Given(config, policies)
    store = _open(store_url)
    try:
        subj = str(pseudonym(keys, subject))
        days = store.subject_periods(subj)
        if not days and not any(True for _ in store.iter_rows(subject=subj)):
            click.echo(f"no records of this subject (pseudonym {subj}): nothing shredded; check the id", err=True)
            ctx.exit(1)
        if not override_retention:
            try:
                policy = given.policy(_recorded_policies(keys, store, subject=subject))
                if policy is not None:
                    check_shred(policy, datetime.now(UTC), days)
            except RetentionRefused as exc:
                click.echo(str(exc), err=True)
                ctx.exit(1)
        gone = store.delete_data_keys(subject=subj)
        w = _writer(store, keys, witness or given.witness)
        w.append_now([event(str(uuid7()), time.time(), "tombstone",
                            {"reason": "erasure", "keys_destroyed": len(gone), "days": days,
                             "override_retention": override_retention}, subject=subj, clear=True)])
        w.checkpoint()
    finally:
        store.close()
    click.echo(f"shredded subject {subj}: {len(gone)} data keys destroyed, tombstone appended")


@audit.command("purge", help="Apply the policies' retention: shred records past the maximum.")
@click.option("--store", "store_url", required=True, help=STORE_HELP)
@click.option("--keyring", type=click.Path(path_type=Path, dir_okay=False), help="Keyring (else env).")
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False), help="mlguard.yaml (its policies).")
@click.option("--policy", "policies", multiple=True, help="Policy name or file (repeatable).")
@click.option("--max", "configured_max", help="The deployment's own retention maximum (ISO 8601, e.g. P2Y).")
@click.option("--before", help="Explicit cut-off date (refused inside a legal minimum).")
@click.option("--witness", type=click.Path(path_type=Path, dir_okay=False), help="Witness file to append to.")
@click.option("--dry-run", is_flag=True, help="Say what would be shredded, change nothing.")
@click.pass_context
def purge(ctx: click.Context, store_url: str, keyring: Path | None, config: Path | None,
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
    keys = _keyring(keyring)
    store = _open(store_url)
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
