"""mlguard: a compliance and privacy guard for machine-learning endpoints (pure ASGI middleware).

Public API only; everything else is importable from its module but not promised.
"""

from mlguard.config import GuardConfig, RouteConfig, load_config
from mlguard.errors import ConfigError, MLGuardError, PolicyError, RequestRejected
from mlguard.middleware import GuardMiddleware
from mlguard.runtime import Guard

__all__ = [
    "ConfigError",
    "Guard",
    "GuardConfig",
    "GuardMiddleware",
    "MLGuardError",
    "PolicyError",
    "RequestRejected",
    "RouteConfig",
    "load_config",
]
