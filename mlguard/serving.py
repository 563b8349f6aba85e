"""Wrap an existing ASGI app, named by import string, with the guard: what ``mlguard serve`` runs.

Why an environment-driven factory: uvicorn starts each worker process by import string, so the config path and
the app's name travel in the environment and every worker builds its own Guard once.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
from pathlib import Path

from mlguard.errors import ConfigError, DependencyMissing, KeyringError
from mlguard.middleware import GuardMiddleware
from mlguard.types import ASGIApp

ENV_CONFIG = "MLGUARD_SERVE_CONFIG"
ENV_APP = "MLGUARD_SERVE_APP"
ENV_FATAL = "MLGUARD_SERVE_FATAL"
"""Set by ``mlguard serve --workers N``: the file where a worker leaves the error that stops the server."""

_LASTING = (ConfigError, KeyringError, DependencyMissing)
"""Errors building the guard that starting the worker again cannot mend (a store that is down may come back)."""


def import_app(target: str) -> ASGIApp:
    """Import ``module:attr`` (dots allowed in attr); the current directory is importable, as with uvicorn."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"app must be given as MODULE:ATTR, got {target!r}", field="app")
    from mlguard.explain.binding import ensure_cwd_importable

    ensure_cwd_importable()  # the model's module is found the same way by explain and config check
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import module {module_name!r}: {exc}", field="app") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"module {module_name!r} has no attribute {attr!r}", field="app") from None
    if not callable(obj):
        raise ConfigError(f"{target!r} is not an ASGI callable", field="app")
    return obj


def create_app() -> GuardMiddleware:
    """uvicorn factory: the app named in MLGUARD_SERVE_APP wrapped by the config in MLGUARD_SERVE_CONFIG."""
    config = os.environ.get(ENV_CONFIG)
    target = os.environ.get(ENV_APP)
    if not config or not target:
        raise ConfigError(f"{ENV_CONFIG} and {ENV_APP} must be set (mlguard serve sets them)")
    try:
        return GuardMiddleware(import_app(target), config=Path(config))
    except _LASTING as exc:
        fatal = os.environ.get(ENV_FATAL)
        if fatal:
            stop_supervisor(Path(fatal), exc)
            # serve prints the message once; a raise here printed a raw traceback per worker, whatever
            # --log-format said (multiprocessing prints what ends a worker process; a SystemExit it does not)
            raise SystemExit(3) from None
        raise


def stop_supervisor(path: Path, exc: Exception) -> None:
    """Leave ``exc`` for ``mlguard serve`` at ``path`` and ask the worker supervisor (this worker's parent) to
    stop.

    Why: uvicorn's supervisor starts a worker that exited again at once, for ever, so a worker that cannot build
    its guard for a lasting reason (a keyring readable by others, a model whose features do not match the
    config: what `mlguard config check` cannot see without building) looped, printing its traceback every few
    seconds, and the server never answered. The first worker to fail writes the message (messages of these
    errors name files, fields and counts, never an input value); serve logs it and exits 1."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # the first worker's error wins
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(f"{type(exc).__name__}: {exc}")
    os.kill(os.getppid(), signal.SIGTERM)
