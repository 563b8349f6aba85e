"""``mlguard redact``: the batch face of the PII stage (JSON lines in, redacted JSON lines out, same order).

Same rules as the middleware, through the public :class:`mlguard.pii.Redactor`: the policy's operators, the
route's field rules when ``--config`` names one (``--route``, or the only route), undeclared strings scanned.
Lines are redacted in chunks with ONE detection pass per chunk; ``--workers`` forks processes after the engine
is loaded (they share it, copy-on-write) so start-up is paid once.

A line that is not a JSON document gets an error on stderr naming its number (never its content), ``null`` in
its place on stdout (so line N out is still line N in), and the exit code 1 at the end.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from mlguard.cli._root import cli

if TYPE_CHECKING:
    from mlguard.config import GuardConfig
    from mlguard.routes import CompiledRoute

_CHUNK = 128
_STATE: dict[str, Any] = {}


def _redact_chunk(chunk: list[tuple[int, bytes]]) -> list[tuple[int, str | None, list[dict[str, Any]], str | None]]:
    """Redact one chunk in the current process; returns (line, output, findings, error) per line."""
    redactor = _STATE["redactor"]
    rules = _STATE["rules"]
    scan = _STATE["scan"]
    parsed: list[tuple[int, Any]] = []
    out: list[tuple[int, str | None, list[dict[str, Any]], str | None]] = []
    errors: dict[int, str] = {}
    for n, raw in chunk:
        try:
            parsed.append((n, json.loads(raw.decode("utf-8"))))
        except UnicodeDecodeError:
            errors[n] = "not valid UTF-8"
        except (ValueError, RecursionError):
            errors[n] = "not valid JSON"
    results = redactor.redact_many([d for _, d in parsed], rules, scan)
    done = {n: res for (n, _), res in zip(parsed, results, strict=True)}
    for n, _ in chunk:
        if n in errors:
            out.append((n, None, [], errors[n]))
            continue
        doc, findings = done[n]
        rows = [{"line": n, "path": f.path, "start": f.start, "end": f.end, "entity": f.entity,
                 "score": round(f.score, 4)} for f in findings]
        out.append((n, json.dumps(doc, ensure_ascii=False), rows, None))
    return out


def _chunks(stream: IO[bytes]) -> Iterator[list[tuple[int, bytes]]]:
    chunk: list[tuple[int, bytes]] = []
    for n, raw in enumerate(stream):
        line = raw.rstrip(b"\r\n")
        chunk.append((n, line))
        if len(chunk) >= _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _build(policies: tuple[str, ...], config: Path | None, route: str | None, keyring_path: Path | None
           ) -> tuple[Any, Any, bool | None]:
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
        from mlguard.keys import ENV_VAR, Keyring

        env = os.environ.get(ENV_VAR)
        path = keyring_path or (cfg.audit.keyring if config is not None else None)
        if path is not None and not Path(path).is_absolute() and cfg.base_dir is not None:
            path = Path(cfg.base_dir) / path
        if env:
            keyring = Keyring.from_env(env)
        elif path is not None and Path(path).exists():
            keyring = Keyring.load(path)
        else:
            raise click.UsageError(f"policy {','.join(policy.ids)} pseudonymises or encrypts: give --keyring FILE "
                                   f"or set {ENV_VAR}")
    vault = None
    if "token" in kinds and keyring is not None:
        from mlguard.pii.vault import Vault

        vpath = Path(settings.vault_path)
        if not vpath.is_absolute() and cfg.base_dir is not None:
            vpath = Path(cfg.base_dir) / vpath
        vault = Vault(vpath, keyring)
    redactor = Redactor.from_policy(policy.pii, settings, keyring=keyring, vault=vault)
    _ = redactor.engine  # load once, before forking workers
    return redactor, rules, scan


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


@cli.command("redact")
@click.option("--policy", "policies", multiple=True, help="Policy name or file (repeatable; default: the config's).")
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="mlguard.yaml: engine settings, policies and the route's field rules.")
@click.option("--route", default=None, help="Which route's field rules to use (its path) when the config has several.")
@click.option("--findings", "findings_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write findings as JSON lines {line, path, start, end, entity, score}.")
@click.option("--keyring", "keyring_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Keyring file for hmac/token/encrypt operators (or env MLGUARD_KEYRING).")
@click.option("--workers", type=int, default=None,
              help="Processes (0 = one per core; default: the config's pii_engine.workers).")
def redact_cmd(policies: tuple[str, ...], config: Path | None, route: str | None, findings_path: Path | None,
               keyring_path: Path | None, workers: int | None) -> int:
    """Redact JSON lines from stdin to stdout (line N out = line N in; bad lines become null, exit 1)."""
    from tqdm import tqdm

    from mlguard.errors import MLGuardError

    try:
        redactor, rules, scan = _build(policies, config, route, keyring_path)
    except MLGuardError as exc:
        raise click.UsageError(str(exc)) from None
    _STATE.update(redactor=redactor, rules=rules, scan=scan)
    n_workers = workers if workers is not None else redactor.settings.workers
    if n_workers == 0:
        n_workers = os.cpu_count() or 1
    out = sys.stdout
    findings_fh = findings_path.open("w", encoding="utf-8") if findings_path else None
    bad = 0
    bar = tqdm(file=sys.stderr, unit="doc", desc="redact", disable=None)
    try:
        stream = sys.stdin.buffer
        if n_workers > 1:
            import multiprocessing

            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(n_workers) as pool:
                results: Iterator[Any] = pool.imap(_redact_chunk, _chunks(stream))
                bad = _emit(results, out, findings_fh, bar)
        else:
            bad = _emit((_redact_chunk(c) for c in _chunks(stream)), out, findings_fh, bar)
    finally:
        bar.close()
        if findings_fh is not None:
            findings_fh.close()
        out.flush()
    if bad:
        click.echo(f"mlguard redact: {bad} line(s) could not be read", err=True)
        click.get_current_context().exit(1)
    return 0


def _emit(results: Iterator[Any], out: IO[str], findings_fh: IO[str] | None, bar: Any) -> int:
    bad = 0
    for chunk in results:
        for n, doc, rows, error in chunk:
            if error is not None:
                bad += 1
                click.echo(f"mlguard redact: line {n}: {error}", err=True)
                out.write("null\n")
            else:
                out.write(doc + "\n")
            if findings_fh is not None:
                for row in rows:
                    findings_fh.write(json.dumps(row) + "\n")
        bar.update(len(chunk))
    return bad
