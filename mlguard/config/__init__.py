"""GuardConfig: the deployment configuration (``mlguard.yaml``), also constructible in Python.

Why pydantic with ``extra="forbid"``: a misspelt key in a compliance tool must be an error at start-up, not a
silently ignored safeguard. Errors name the file and the dotted field path.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlguard.config.audit import AuditSettings
from mlguard.config.explain import ExplainSettings, ModelBinding
from mlguard.config.fairness import FairnessSettings
from mlguard.config.pii import PIIEngineSettings
from mlguard.errors import ConfigError
from mlguard.validation import first_error

__all__ = [
    "AdminSettings",
    "AuditSettings",
    "ExplainSettings",
    "FairnessSettings",
    "GuardConfig",
    "LimitSettings",
    "ModelBinding",
    "PIIEngineSettings",
    "RetentionSettings",
    "RouteConfig",
    "load_config",
]

MiB = 1024 * 1024
_PATH_RE = re.compile(r"^/[^\s]*$")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "CONNECT"})


class LimitSettings(BaseModel):
    """Limits on request bodies of guarded routes; each one, when hit, is named in the 4xx answer."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(default=MiB, gt=0, description="Largest body read (413 above).")
    max_depth: int = Field(default=32, gt=0, le=500, description="Deepest nesting of arrays/objects (422 above).")
    max_string_length: int = Field(default=100_000, gt=0, description="Longest JSON string, in characters (422 above).")
    max_integer_digits: int = Field(default=64, gt=0, le=4000, description="Most digits in a JSON integer (422 above).")
    max_array_length: int = Field(default=10_000, gt=0, description="Most items in one JSON array (422 above).")
    content_types: list[str] = Field(
        default_factory=lambda: ["application/json"],
        description="Accepted request media types (any `+json` suffix type is also accepted).",
    )


class AdminSettings(BaseModel):
    """The guard's own endpoints (feedback, explanations, metrics, health), all under one prefix."""

    model_config = ConfigDict(extra="forbid")

    prefix: str = Field(default="/mlguard", description="Path prefix of the admin endpoints.")
    token_env: str = Field(default="MLGUARD_ADMIN_TOKEN", description="Environment variable holding the admin token.")
    enabled: bool = Field(default=True, description="Serve the admin endpoints at all.")
    metrics_dir: str | None = Field(
        default=None,
        description="Directory where each worker process spools its metrics (about once a second), so "
                    "`{prefix}/metrics` answers for all workers together: counters and histograms summed "
                    "over every worker since the directory was emptied, gauges one series per live worker "
                    "(label `worker`). Needed with several workers behind one port; `mlguard serve "
                    "--workers N` uses a fresh temporary directory when this is unset. Empty it when the "
                    "service restarts. Relative to the config's directory.")

    @field_validator("prefix")
    @classmethod
    def _prefix_is_path(cls, v: str) -> str:
        if not _PATH_RE.match(v) or v.endswith("/"):
            raise ValueError("must start with '/' and not end with '/'")
        return v


class RetentionSettings(BaseModel):
    """The deployment's own retention choice; the policies set floors and may require a maximum (GDPR)."""

    model_config = ConfigDict(extra="forbid")

    max: str | None = Field(
        default=None, description="ISO 8601 duration after which audit records are crypto-shredded (e.g. P3Y); never "
                                  "below a policy's legal minimum. Required when a policy (gdpr) requires a maximum.",
    )


class RouteConfig(BaseModel):
    """One guarded route. Paths are exact or use ``{name}`` segments (``/models/{name}/predict``)."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="Path of the guarded route, as the app routes it ({id}, {id:int}, {p:path} ...; "
                                  "without root_path or a Mount's prefix; a trailing slash does not matter).")
    methods: list[str] = Field(default_factory=lambda: ["POST"],
                               description="HTTP methods guarded on it: POST, PUT, PATCH or DELETE (a JSON body).")
    subject: str | None = Field(default=None, description="JSONPath to the id of the person the record is about.")
    protected: dict[str, str] = Field(
        default_factory=dict, description="Protected attribute name -> JSONPath, read before redaction."
    )
    pii: dict[str, str] = Field(
        default_factory=dict,
        description="JSONPath -> ENTITY (redact whole value), `scan` (detect spans) or `keep`.",
    )
    scan_undeclared: bool | None = Field(default=None, description="Override pii_engine.scan_undeclared on this route.")
    model: ModelBinding | None = Field(default=None, description="Model binding: explanations and fairness decisions.")
    policies: list[str] | None = Field(default=None, description="Policies for this route instead of the global list.")

    @field_validator("path")
    @classmethod
    def _path_ok(cls, v: str) -> str:
        if not _PATH_RE.match(v):
            raise ValueError("must start with '/' and contain no spaces")
        return v

    @field_validator("methods")
    @classmethod
    def _methods_upper(cls, v: list[str]) -> list[str]:
        """Upper-cased; only methods whose request carries the body the guard reads. Why: ``methods: [GET]`` was
        accepted, then every GET was refused (415, no JSON body) and its query string never inspected."""
        if not v:
            raise ValueError("must name at least one method")
        out = [m.upper() for m in v]
        for m in out:
            if m not in _BODY_METHODS:
                raise ValueError(
                    f"{m} cannot be guarded: the guard reads the request's JSON body, which {m} requests do not "
                    "carry (query strings are not inspected); guard the route's POST, PUT, PATCH or DELETE"
                    if m in _BODILESS else f"unknown HTTP method {m!r}; use POST, PUT, PATCH or DELETE")
        return out


class GuardConfig(BaseModel):
    """The whole deployment configuration. See README "Configuration" for every key."""

    model_config = ConfigDict(extra="forbid")

    policies: list[str] = Field(
        default_factory=lambda: ["base"], description="Bundled policy names or paths to policy files, composed."
    )
    routes: list[RouteConfig] = Field(default_factory=list, description="The guarded routes.")
    limits: LimitSettings = Field(default_factory=LimitSettings, description="Request body limits of guarded routes.")
    admin: AdminSettings = Field(default_factory=AdminSettings, description="The admin endpoints.")
    retention: RetentionSettings = Field(default_factory=RetentionSettings, description="Audit retention.")
    audit: AuditSettings = Field(default_factory=AuditSettings, description="The audit trail.")
    pii_engine: PIIEngineSettings = Field(default_factory=PIIEngineSettings, description="The PII detection engine.")
    explain: ExplainSettings = Field(default_factory=ExplainSettings, description="Explanations and reason codes.")
    fairness: FairnessSettings = Field(default_factory=FairnessSettings, description="Live fairness monitoring.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="mlguard logger level.")
    freeze_gc: bool = Field(
        default=True,
        description="After the engines are built, gc.freeze() them so garbage collection never walks them "
                    "again (saves latency on every request; process-wide).")
    base_dir: Path | None = Field(
        default=None, description="Directory relative paths resolve against (default: the config file's directory)."
    )

    def __init__(self, /, **data: Any) -> None:
        """As ``load_config`` of a dict: a ConfigError naming the first bad field (the nearest known key for a
        typo), not pydantic's ValidationError, which quoted the input values and linked pydantic's site."""
        try:
            super().__init__(**data)
        except ValidationError as exc:
            msg, field = first_error(exc, GuardConfig)
            raise ConfigError(msg, field=field) from None


def load_config(source: str | Path | GuardConfig | dict[str, Any]) -> GuardConfig:
    """Load and validate a configuration; raise ConfigError naming the file and the first bad field."""
    if isinstance(source, GuardConfig):
        return source
    if isinstance(source, dict):
        return _validate(source, file=None)
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config ({exc.strerror})", file=str(path)) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else None
        raise ConfigError(f"not valid YAML ({getattr(exc, 'problem', 'parse error')})", file=str(path),
                          field=where) from None
    if not isinstance(data, dict):
        raise ConfigError("top level must be a mapping", file=str(path))
    data.setdefault("base_dir", str(path.resolve().parent))
    return _validate(data, file=str(path))


def _validate(data: dict[str, Any], *, file: str | None) -> GuardConfig:
    try:
        return GuardConfig.model_validate(data)
    except ConfigError as exc:  # from GuardConfig.__init__, which pydantic calls: said again with the file
        raise ConfigError(exc.message, file=file, field=exc.field) from None
    except ValidationError as exc:
        msg, field = first_error(exc, GuardConfig)
        raise ConfigError(msg, file=file, field=field) from None
