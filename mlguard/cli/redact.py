"""``mlguard redact``: the batch face of the PII stage (JSON lines in, redacted JSON lines out, same order).

Same rules as the middleware, through the public :class:`mlguard.pii.Redactor`: the policy's operators, the
route's field rules when ``--config`` names one (``--route``, or the only route), undeclared strings scanned.
Each line is read as the middleware reads a request body (:func:`mlguard.body.parse_json` under the config's
``limits``, and ``max_body_bytes`` per line): a line serve would refuse is refused here too, so the batch never
passes what the guard would not, nor writes out what is not JSON (``NaN``, ``1e400`` as ``Infinity``). A line in
which nothing was found is written out as it came, byte for byte, as the app receives the original body then.

Lines are numbered from 1, as ``sed``, ``grep -n`` and editors number them, in messages and findings alike.
Lines are redacted in chunks with ONE detection pass per chunk; ``--workers`` forks processes after the engine
is loaded (they share it, copy-on-write) so start-up is paid once.

A line that cannot be read gets an error on stderr naming its number and the rule it broke (never its content),
``null`` in its place on stdout (so line N out is still line N in), and the exit code 1 at the end. A summary
line (counts and entity names only) ends every run on stderr, with a progress bar before it on a terminal.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from mlguard.cli._root import cli

if TYPE_CHECKING:
    from mlguard.config import GuardConfig
    from mlguard.keys import Keyring
    from mlguard.routes import CompiledRoute

_CHUNK = 128
_STATE: dict[str, Any] = {}
_BOM = b"\xef\xbb\xbf"
# parse_json reports a position as "at line L column C" within the document; a line holds one document on one
# line, so only the column says anything, and "line 1" next to "line 7:" would read as the file's line.
_POSITION = re.compile(r" at line 1 column (\d+)$")

Line = tuple[int, bytes]  # (number from 1, the line without its terminator)
Result = tuple[int, str | None, list[dict[str, Any]], str | None]  # (number, output, findings rows, error)


def _refusal(raw: bytes) -> tuple[Any, str | None]:
    """``(document, None)``, or ``(None, reason)`` when the middleware would refuse ``raw`` as a request body.

    Why :func:`mlguard.body.parse_json` and not ``json.loads``: the batch must not accept what serve refuses. A
    duplicate member was kept last by ``json.loads`` (the first value, maybe personal data, silently dropped);
    ``NaN`` and ``1e400`` were accepted and written back as ``NaN``/``Infinity``, which is not JSON. The reason
    is the limit's name and parse_json's detail, which never holds content (body.py guarantees it)."""
    from mlguard.body import parse_json
    from mlguard.errors import RequestRejected

    limits = _STATE["limits"]
    if len(raw) > limits.max_body_bytes:
        return None, f"refused (max_body_bytes): longer than max_body_bytes={limits.max_body_bytes}"
    try:
        return parse_json(raw, limits), None
    except RequestRejected as exc:
        detail = _POSITION.sub(r" at column \1", exc.detail).removeprefix("body is ").removeprefix("body ")
        return None, f"refused ({exc.limit}): {detail}"


def _redact_chunk(job: tuple[int, list[Line]]) -> tuple[int, list[Result]]:
    """Redact one chunk in the current process; returns the chunk's input size (for the progress bar) and
    (line, output, findings, error) per line. A line with no finding is output as its own text, unchanged."""
    size, chunk = job
    redactor = _STATE["redactor"]
    rules = _STATE["rules"]
    scan = _STATE["scan"]
    parsed: list[tuple[int, Any]] = []
    errors: dict[int, str] = {}
    for n, raw in chunk:
        doc, error = _refusal(raw)
        if error is None:
            parsed.append((n, doc))
        else:
            errors[n] = error
    results = redactor.redact_many([d for _, d in parsed], rules, scan)
    done = {n: res for (n, _), res in zip(parsed, results, strict=True)}
    out: list[Result] = []
    for n, raw in chunk:
        if n in errors:
            out.append((n, None, [], errors[n]))
            continue
        doc, findings = done[n]
        if not findings:
            # As the PII stage does (it keeps the original body unless there are findings): re-serialising
            # changed numbers nobody redacted (1.10 -> 1.1, 1E2 -> 100.0). parse_json accepted it: valid UTF-8.
            out.append((n, raw.decode("utf-8"), [], None))
            continue
        rows = [{"line": n, "path": f.path, "start": f.start, "end": f.end, "entity": f.entity,
                 "score": round(f.score, 4), "recognizer": f.recognizer, "operator": f.operator}
                for f in findings]  # which recognizer found it and what was done: a reviewer's two questions
        out.append((n, json.dumps(doc, ensure_ascii=False, allow_nan=False), rows, None))
    return size, out


def _chunks(stream: IO[bytes]) -> Iterator[tuple[int, list[Line]]]:
    """Chunks of numbered lines (from 1) with their size in bytes. A UTF-8 byte order mark opening the input is
    dropped: editors on Windows write one, and it made line 1 unreadable (``null``, exit 1) although the
    middleware ignores it in a body; it marks the file, not line 1, so it is not written out either."""
    chunk: list[Line] = []
    size = 0
    for n, raw in enumerate(stream, start=1):
        size += len(raw)
        line = raw.rstrip(b"\r\n")
        if n == 1 and line.startswith(_BOM):
            line = line[len(_BOM):]
        chunk.append((n, line))
        if len(chunk) >= _CHUNK:
            yield size, chunk
            chunk, size = [], 0
    if chunk:
        yield size, chunk


def _build(policies: tuple[str, ...], config: Path | None, route: str | None, keyring_path: Path | None
           ) -> tuple[Any, Any, bool | None, Any]:
    from mlguard.config import GuardConfig, load_config
    from mlguard.pii.redactor import Redactor
    from mlguard.policy import resolve_policies

    cfg = load_config(config) if config is not None else GuardConfig()
    rules: list[Any] = []
    scan: bool | None = None
    policy = None
    if config is not None and cfg.routes:
        routes = _checked_routes(cfg, config)
        chosen = [r for r in routes if r.path == route] if route else routes[:1] if len(routes) == 1 else []
        if route and not chosen:
            raise click.UsageError(f"--route {route} is not a route of {config}")
        if not chosen and len(routes) > 1:
            raise click.UsageError("the config has several routes: name one with --route")
        rules = list(chosen[0].pii_rules)
        scan = chosen[0].config.scan_undeclared
        policy = chosen[0].policy  # the route's effective policy: its own `policies` when it names some, as serve
    if policies or policy is None:
        policy = resolve_policies(list(policies) or cfg.policies, base_dir=cfg.base_dir)
    settings = cfg.pii_engine
    kinds = {str(rule.operator) for rule in policy.pii.entities.values()} | {str(policy.pii.default_operator)}
    keyring = None
    if kinds & {"hmac", "token", "encrypt"}:
        keyring = _keyring(keyring_path, cfg if config is not None else None, ",".join(policy.ids))
    vault = None
    if "token" in kinds and keyring is not None:
        from mlguard.pii.vault import Vault

        vpath = Path(settings.vault_path)
        if not vpath.is_absolute() and cfg.base_dir is not None:
            vpath = Path(cfg.base_dir) / vpath
        vault = Vault(vpath, keyring)
    redactor = Redactor.from_policy(policy.pii, settings, keyring=keyring, vault=vault)
    _ = redactor.engine  # load once, before forking workers
    return redactor, rules, scan, cfg.limits


def _keyring(path: Path | None, cfg: GuardConfig | None, policy: str) -> Keyring:
    """The keyring of the pseudonyms: ``--keyring FILE``, else env MLGUARD_KEYRING, else the config's
    ``audit.keyring`` (relative to the config's directory, as serve reads it).

    Why the explicit file first: the environment used to win silently, so a user who named the right file got
    pseudonyms from another key, which match nothing made with the right one. The environment still wins over the
    config, as in serve. A named file that is missing is said to be missing (not "give --keyring"), and is never
    created: a new key would make pseudonyms that match nothing either."""
    from mlguard.keys import ENV_VAR, Keyring

    if path is not None:
        if not path.exists():
            raise click.UsageError(f"--keyring {path}: no such file")
        return Keyring.load(path)  # KeyringError (a usage error) when unreadable, not a keyring or not 0600
    env = os.environ.get(ENV_VAR)
    if env:
        return Keyring.from_env(env)
    configured = cfg.audit.keyring if cfg is not None else None
    if configured is not None:
        file = Path(configured)
        if not file.is_absolute() and cfg is not None and cfg.base_dir is not None:
            file = Path(cfg.base_dir) / file
        if not file.exists():
            raise click.UsageError(f"audit.keyring {file} of the config: no such file")
        return Keyring.load(file)
    raise click.UsageError(f"policy {policy} pseudonymises or encrypts: give --keyring FILE, set {ENV_VAR} or "
                           "audit.keyring in --config")


def _checked_routes(cfg: GuardConfig, file: Path) -> list[CompiledRoute]:
    """Compile every route of ``cfg`` as the start-up does (:func:`mlguard.routes.compile_route`, which
    :func:`mlguard.runtime.check_config` runs for ``mlguard config check`` and ``mlguard serve``), each against the
    policies serve would give it, so a config serve refuses for its routes (an unknown PII entity, with the nearest
    known name; a bad JSONPath) is refused here with the same ``FILE:FIELD: message``.

    Why not all of ``check_config``: its deployment checks (``retention.max`` for the audit trail, model bindings)
    concern serving, which a batch redaction does not do. Why every route, not only the chosen one: a misspelt
    entity silently gets the policy's default operator, and the same config is the one serve will be given.
    """
    from mlguard.errors import ConfigError
    from mlguard.policy import resolve_policies
    from mlguard.routes import compile_route
    from mlguard.runtime import located

    custom = [str(spec.get("entity", "")) for spec in cfg.pii_engine.custom_recognizers if isinstance(spec, Mapping)]
    try:
        base = resolve_policies(cfg.policies, base_dir=cfg.base_dir)
        return [compile_route(i, r, base if r.policies is None else resolve_policies(r.policies,
                                                                                       base_dir=cfg.base_dir),
                              custom_entities=custom)
                for i, r in enumerate(cfg.routes)]
    except ConfigError as exc:
        raise located(exc, file) from None


def _check_writable(option: str, path: Path) -> None:
    """Refuse (usage error, exit 2) an output file that cannot be created, before the engine loads and any line
    is read: a missing directory ended in a FileNotFoundError traceback after start-up. Nothing is created or
    truncated here (a later usage error must not leave an empty file behind); opening it later may still fail
    (a race), and says so the same way."""
    parent = path.parent
    if not parent.is_dir():
        why = "is not a directory" if parent.exists() else "does not exist"
        raise click.UsageError(f"{option} {path}: directory {parent} {why}")
    target = path if path.exists() else parent
    if not os.access(target, os.W_OK):
        raise click.UsageError(f"{option} {path}: not writable")


def _input_size(stream: IO[bytes]) -> int | None:
    """Bytes left to read when ``stream`` is a regular file (``< in.jsonl``), else None (a pipe: no total)."""
    try:
        st = os.fstat(stream.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        return max(st.st_size - stream.tell(), 0)
    except (OSError, ValueError, AttributeError):  # no file descriptor (tests, wrapped streams): no total
        return None


@contextmanager
def _progress(total: int | None) -> Iterator[Callable[[int], object]]:
    """A progress bar on stderr in bytes of input (a total, so an ETA, when stdin is a file), as the audit CLI
    shows one: ``disable=None`` hides it when stderr is not a terminal, so logs and pipes stay clean. No monitor
    thread: ``--workers`` forks while the bar is open, and a process should not fork while another of its
    threads may hold a lock."""
    from tqdm import tqdm

    tqdm.monitor_interval = 0
    bar = tqdm(total=total, desc="redact", unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
               disable=None, mininterval=0.5)
    try:
        yield bar.update
    finally:
        bar.close()


@cli.command("redact")
@click.option("--policy", "policies", multiple=True, help="Policy name or file (repeatable; default: the config's).")
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="mlguard.yaml: engine settings, policies, body limits and the route's field rules.")
@click.option("--route", default=None, help="Which route's field rules to use (its path) when the config has several.")
@click.option("--findings", "findings_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write findings as JSON lines {line, path, start, end, entity, score, recognizer, operator}; line "
                   "counts from 1, as in the error messages (sed -n Np, grep -n).")
@click.option("--keyring", "keyring_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Keyring file for hmac/token/encrypt operators. It wins over env MLGUARD_KEYRING, which wins "
                   "over the config's audit.keyring.")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Processes (0 = one per core; default: the config's pii_engine.workers).")
def redact_cmd(policies: tuple[str, ...], config: Path | None, route: str | None, findings_path: Path | None,
               keyring_path: Path | None, workers: int | None) -> int:
    """Redact JSON lines from stdin to stdout (line N out = line N in; lines counted from 1).

    Each line is read as serve reads a request body (the config's limits): a line it would refuse becomes null,
    named on stderr by number and rule, and the exit code is 1. A line with nothing found is written out as it
    came. A summary (lines read, redacted, findings per entity, bad lines) ends on stderr.
    """
    from mlguard.errors import MLGuardError

    if findings_path is not None:
        _check_writable("--findings", findings_path)
    try:
        redactor, rules, scan, limits = _build(policies, config, route, keyring_path)
    except MLGuardError as exc:
        raise click.UsageError(str(exc)) from None
    _STATE.update(redactor=redactor, rules=rules, scan=scan, limits=limits)
    n_workers = workers if workers is not None else redactor.settings.workers
    if n_workers == 0:
        n_workers = os.cpu_count() or 1
    out = sys.stdout
    try:
        findings_fh = findings_path.open("w", encoding="utf-8") if findings_path else None
    except OSError as exc:
        raise click.UsageError(f"--findings {findings_path}: {exc.strerror or 'cannot be written'}") from None
    stream = sys.stdin.buffer
    tally = _Tally()
    try:
        with _progress(_input_size(stream)) as advance:
            if n_workers > 1:
                import multiprocessing

                ctx = multiprocessing.get_context("fork")
                with ctx.Pool(n_workers) as pool:
                    results: Iterator[Any] = pool.imap(_redact_chunk, _chunks(stream))
                    _emit(results, out, findings_fh, advance, tally)
            else:
                _emit((_redact_chunk(c) for c in _chunks(stream)), out, findings_fh, advance, tally)
    finally:
        if findings_fh is not None:
            findings_fh.close()
        out.flush()
    click.echo(f"mlguard redact: {tally.summary()}", err=True)
    if tally.bad:
        click.get_current_context().exit(1)
    return 0


class _Tally:
    """Counts for the closing summary: numbers and entity names only, never a value."""

    def __init__(self) -> None:
        self.read = 0
        self.redacted = 0
        self.bad = 0
        self.entities: Counter[str] = Counter()

    def summary(self) -> str:
        found = ", ".join(f"{entity} {count}" for entity, count in
                          sorted(self.entities.items(), key=lambda item: (-item[1], item[0])))
        return (f"{self.read} line(s) read, {self.redacted} redacted, "
                f"{sum(self.entities.values())} finding(s){f' ({found})' if found else ''}, "
                f"{self.bad} bad line(s){' (named above; null in their place)' if self.bad else ''}")


def _emit(results: Iterator[tuple[int, list[Result]]], out: IO[str], findings_fh: IO[str] | None,
          advance: Callable[[int], object], tally: _Tally) -> None:
    for size, chunk in results:
        for n, doc, rows, error in chunk:
            tally.read += 1
            if error is not None or doc is None:
                tally.bad += 1
                click.echo(f"mlguard redact: line {n}: {error}", err=True)
                out.write("null\n")
                continue
            out.write(doc + "\n")
            if rows:
                tally.redacted += 1
                tally.entities.update(str(row["entity"]) for row in rows)
            if findings_fh is not None:
                for row in rows:
                    findings_fh.write(json.dumps(row) + "\n")
        advance(size)
