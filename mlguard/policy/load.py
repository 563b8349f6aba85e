"""Finding, reading and resolving policy files: bundled names, paths, ``extends``, and the composed result.

Why bundled names resolve at run time: the wheel carries the top-level ``policies/`` directory as
``mlguard/_policies/`` (pyproject force-include), while a source checkout keeps it at ``<repo>/policies/``;
``find_policy("gdpr")`` works in both without the user knowing where the package lives.

Why a cache: every route that names the same policies shares one :class:`EffectivePolicy` object, built once at
start-up, so the request path never reads YAML.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import re
import threading
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import yaml
from pydantic import ValidationError

from mlguard.errors import PolicyError
from mlguard.policy.compose import ResolvedPolicy, compose, merge_extends
from mlguard.policy.effective import EffectivePolicy, PolicySource
from mlguard.policy.model import PolicyDoc
from mlguard.validation import first_error

__all__ = [
    "BASE_POLICY",
    "bundled_dirs",
    "bundled_policies",
    "clear_cache",
    "find_policy",
    "load_policy_file",
    "policy_notices",
    "resolve_policies",
    "resolve_policy",
]

BASE_POLICY = "base"
"""The neutral policy of engineering defaults: every shipped policy extends it, and it fills in what the
composed policies leave unset."""

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_lock = threading.Lock()
_resolved_cache: dict[Path, ResolvedPolicy] = {}
_effective_cache: dict[tuple[tuple[str, ...], str | None], EffectivePolicy] = {}


# ------------------------------------------------------------------------------------------- finding

def bundled_dirs() -> list[Path]:
    """Directories holding bundled policies: the installed package's ``_policies``, then a checkout's."""
    dirs: list[Path] = []
    try:
        packaged = importlib.resources.files("mlguard").joinpath("_policies")
        if packaged.is_dir():
            dirs.append(Path(str(packaged)))
    except (ModuleNotFoundError, NotADirectoryError):  # pragma: no cover - only in odd installs
        pass
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "policies").is_dir():
        dirs.append(checkout / "policies")
    return dirs


def bundled_policies() -> dict[str, Path]:
    """Bundled policy name -> file, sorted by name (the first directory of :func:`bundled_dirs` wins)."""
    found: dict[str, Path] = {}
    for directory in bundled_dirs():
        for path in sorted(directory.glob("*.yaml")):
            found.setdefault(path.stem, path)
    return dict(sorted(found.items()))


def _looks_like_path(ref: str | Path) -> bool:
    if isinstance(ref, Path):
        return True
    return "/" in ref or "\\" in ref or ref.endswith((".yaml", ".yml")) or ref.startswith(("~", "."))


def find_policy(name_or_path: str | Path, base_dir: Path | None = None) -> Path:
    """The file for a bundled name (``gdpr``) or a path (relative paths resolve against ``base_dir``).

    Names only ever resolve to bundled files, never to a file that happens to sit next to the config, so a
    stray ``gdpr.yaml`` cannot shadow the shipped policy.
    """
    if _looks_like_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        if not path.is_file():
            raise PolicyError("policy file not found", file=str(path))
        return path
    name = str(name_or_path)
    bundled = bundled_policies()
    if not _NAME_RE.match(name) or name not in bundled:
        known = ", ".join(bundled) or "(none found: is the package installed correctly?)"
        raise PolicyError(f"unknown policy {name!r}; bundled policies: {known}; or give a path to a file")
    return bundled[name]


# ------------------------------------------------------------------------------------------- reading

def _read(path: Path) -> tuple[PolicyDoc, str]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"cannot read policy ({exc.strerror})", file=str(path)) from None
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise PolicyError("not UTF-8 text", file=str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise PolicyError(f"not valid YAML ({getattr(exc, 'problem', None) or 'parse error'})", file=str(path),
                          field=f"line {mark.line + 1}" if mark is not None else None) from None
    if not isinstance(data, dict):
        raise PolicyError("top level must be a mapping", file=str(path))
    try:
        doc = PolicyDoc.model_validate(data)
    except ValidationError as exc:
        msg, field = first_error(exc, PolicyDoc)
        raise PolicyError(msg, file=str(path), field=field) from None
    return doc, hashlib.sha256(raw).hexdigest()


def load_policy_file(path: str | Path) -> PolicyDoc:
    """Parse and validate one policy file (its ``extends`` are not applied). PolicyError names file and field."""
    return _read(Path(path))[0]


def resolve_policy(name_or_path: str | Path, base_dir: Path | None = None) -> ResolvedPolicy:
    """One policy with its ``extends`` chain applied; cycles and id clashes raise PolicyError."""
    return _resolve(find_policy(name_or_path, base_dir), ())


def _resolve(path: Path, stack: tuple[Path, ...]) -> ResolvedPolicy:
    path = path.resolve()
    if path in stack:
        cycle = " -> ".join(p.stem for p in (*stack[stack.index(path):], path))
        raise PolicyError(f"extends cycle: {cycle}", file=str(stack[-1]), field="extends")
    with _lock:
        cached = _resolved_cache.get(path)
    if cached is not None:
        return cached
    doc, digest = _read(path)
    parents: list[ResolvedPolicy] = []
    for i, ref in enumerate(doc.extends):
        try:
            parent_path = find_policy(ref, base_dir=path.parent)
        except PolicyError as exc:
            reason = f"file not found: {exc.file}" if exc.file else str(exc)
            raise PolicyError(reason, file=str(path), field=f"extends.{i}") from None
        parents.append(_resolve(parent_path, (*stack, path)))
    source = PolicySource(id=doc.id, version=doc.version, title=doc.title, status=doc.status,
                          effective_from=doc.effective_from, review_by=doc.review_by, path=str(path),
                          sha256=digest, requested=True)
    seen: dict[str, str] = {}
    for parent in parents:
        for s in parent.chain:
            _claim_id(seen, s.id, s.path, path)
    _claim_id(seen, doc.id, str(path), path)
    resolved = merge_extends(doc, source, parents)
    with _lock:
        _resolved_cache[path] = resolved
    return resolved


def _claim_id(seen: dict[str, str], pid: str, file: str, where: Path) -> None:
    if seen.setdefault(pid, file) != file:
        raise PolicyError(f"two different files declare policy id {pid!r}: {seen[pid]} and {file}",
                          file=str(where), field="id")


# ------------------------------------------------------------------------------------------ composing

def resolve_policies(names: Sequence[str | Path], base_dir: Path | None = None) -> EffectivePolicy:
    """Compose bundled names and/or policy files into the effective policy (cached per names and base_dir).

    An empty list means the neutral ``base`` policy. The bundled ``base`` also fills every field the named
    policies leave unset. Unknown names raise PolicyError listing the bundled policies.
    """
    refs: list[str | Path] = list(names) or [BASE_POLICY]
    key = (tuple(f"{type(r).__name__}:{r}" for r in refs), str(base_dir) if base_dir else None)
    with _lock:
        cached = _effective_cache.get(key)
    if cached is not None:
        return cached
    resolved: list[ResolvedPolicy] = []
    seen: dict[str, str] = {}
    for ref in refs:
        policy = resolve_policy(ref, base_dir)
        if any(r.source.path == policy.source.path for r in resolved):
            continue
        _claim_id(seen, policy.id, policy.source.path, Path(policy.source.path))
        resolved.append(policy)
    fallback = resolve_policy(BASE_POLICY) if BASE_POLICY in bundled_policies() else None
    effective = compose(resolved, fallback=fallback)
    with _lock:
        effective = _effective_cache.setdefault(key, effective)
    return effective


def policy_notices(policy: EffectivePolicy, today: date | None = None) -> list[tuple[int, str]]:
    """What a deployment is told about its composed policy, as (logging level, text): a policy past its
    ``review_by`` date, one not yet in effect (enforced all the same) and each conflict the composition resolved.

    Told when a guard starts (``Guard`` logs them) and by ``mlguard config check`` (prints them), not when the
    policy is composed: composition is cached per process, so a notice logged there was said only by whichever
    caller composed first; under ``mlguard serve`` with one worker that was the pre-start check, whose logger
    showed warnings only, and "applies from" was never seen."""
    today = today or date.today()
    out: list[tuple[int, str]] = []
    for s in policy.sources:
        if s.review_by < today:
            out.append((logging.WARNING, f"policy {s.id} (version {s.version}) is past its review_by date "
                                         f"{s.review_by.isoformat()}: check it against the law"))
        if s.effective_from > today:
            out.append((logging.INFO, f"policy {s.id} applies from {s.effective_from.isoformat()}; it is enforced "
                                      "now as configured"))
    out += [(logging.WARNING, f"policy conflict on {c.field}: {c.resolution}") for c in policy.conflicts]
    return out


def clear_cache() -> None:
    """Forget parsed and composed policies (tests, or after editing a policy file in a long-lived process)."""
    with _lock:
        _resolved_cache.clear()
        _effective_cache.clear()
