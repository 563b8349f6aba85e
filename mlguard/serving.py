"""Wrap an existing ASGI app, named by import string, with the guard: what ``mlguard serve`` runs.

Why an environment-driven factory: uvicorn starts each worker process by import string, so the config path and
the app's name travel in the environment and every worker builds its own Guard once.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from mlguard.errors import ConfigError
from mlguard.middleware import GuardMiddleware
from mlguard.types import ASGIApp

ENV_CONFIG = "MLGUARD_SERVE_CONFIG"
ENV_APP = "MLGUARD_SERVE_APP"


def import_app(target: str) -> ASGIApp:
    """Import ``module:attr`` (dots allowed in attr); the current directory is importable, as with uvicorn."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"app must be given as MODULE:ATTR, got {target!r}", field="app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
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
    return GuardMiddleware(import_app(target), config=Path(config))
