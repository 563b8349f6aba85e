"""The contract between the pipeline and its stages (pii, explain, fairness, audit).

Why a contract: each capability is one module plugged into one place of the request path; the Exchange calls
the hooks below in order and never knows what a stage does. Stages never import each other: what one stage
learns for another travels on the Exchange (``findings``, ``protected``, ``outcome``, ``record``).

Hooks, per guarded request, in this order (stages in the order of ``STAGE_ORDER``):

1. ``before_app(ex)``: may rewrite ``ex.document`` (what the app will receive); raising follows failure_mode.
2. the wrapped app runs on ``ex.document``.
3. ``after_app(ex)``: sees ``ex.response_doc`` (parsed JSON response, when inspected) and ``ex.outcome``;
   may modify ``ex.response_doc`` (set ``ex.response_modified = True``) and add ``ex.extra_headers``.
4. ``finish(ex)``: always runs, for refused and failed exchanges too, before the response is released (the
   audit stage writes its record here). Raising follows failure_mode.

Heavy engines are built once in the factory (``create``), never per request; CPU-bound work runs off the event
loop (``anyio.to_thread.run_sync``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mlguard.config import GuardConfig
    from mlguard.exchange import Exchange
    from mlguard.policy import EffectivePolicy
    from mlguard.routes import CompiledRoute

STAGE_ORDER: tuple[str, ...] = ("pii", "explain", "fairness", "audit")
"""Stage names in pipeline order. Each name maps to the factory ``mlguard.<name>.stage:create``."""


@dataclass(frozen=True, slots=True)
class AdminRequest:
    """What an admin handler receives: already authenticated by the admin token."""

    method: str
    path: str  # the part after the admin prefix, e.g. "/feedback"
    query: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class AdminResponse:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


AdminHandler = Callable[[AdminRequest], Awaitable[AdminResponse]]


@dataclass(frozen=True, slots=True)
class AdminRoute:
    """An admin endpoint a stage contributes: ``path`` after the prefix, ``{name}`` segments allowed."""

    method: str
    path: str
    handler: AdminHandler
    public: bool = False  # True: no token needed (health only)


@dataclass(slots=True)
class BuildContext:
    """Everything a stage factory may read to build itself once at start-up."""

    config: GuardConfig
    policy: EffectivePolicy
    routes: Sequence[CompiledRoute]
    shared: dict[str, Any] = field(default_factory=dict)  # e.g. "keyring", built once and shared


class Stage(Protocol):
    """A pipeline stage. See the module docstring for when each hook runs."""

    name: str

    async def before_app(self, ex: Exchange) -> None: ...

    async def after_app(self, ex: Exchange) -> None: ...

    async def finish(self, ex: Exchange) -> None: ...

    def admin_routes(self) -> list[AdminRoute]: ...

    def describe(self) -> dict[str, Any]:
        """Identity for the audit record and the demo (engine names, versions, hashes)."""
        ...

    async def aclose(self) -> None: ...


class BaseStage:
    """Convenience base with do-nothing hooks; a stage overrides what it needs."""

    name = "base"

    async def before_app(self, ex: Exchange) -> None:
        return None

    async def after_app(self, ex: Exchange) -> None:
        return None

    async def finish(self, ex: Exchange) -> None:
        return None

    def admin_routes(self) -> list[AdminRoute]:
        return []

    def describe(self) -> dict[str, Any]:
        return {}

    async def aclose(self) -> None:
        return None


StageFactory = Callable[[BuildContext], "Stage | None"]
"""``mlguard.<name>.stage:create(ctx)``: returns the stage, or None when the config does not need it."""
