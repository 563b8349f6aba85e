"""Deployment settings of the fairness stage (``fairness:`` in mlguard.yaml). Owned by the fairness area."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_UNKNOWN_VALUES = ("prefer not to say", "prefer not to answer", "decline to state", "decline to answer",
                          "decline to self-identify", "i don't wish to answer", "not specified", "not disclosed",
                          "unknown", "n/a")
"""Protected-attribute values that say the person did not state one (``fairness.unknown_values``' default):
common decline-to-state spellings of application forms and EEO surveys. Not "none" or "na": for some attributes
(religion, an "NA" region) those are answers."""


def fold_category(value: str) -> str:
    """How a protected-attribute value is matched with ``categories`` and ``unknown_values``: case and
    surrounding whitespace ignored ("female", " Female " and "FEMALE" all match "Female").

    Why: the same answer arrives in several spellings from different forms and ATS exports; matched exactly,
    "female" counted as ``other`` next to "Female", which split one group in two and fed the catch-all."""
    return value.strip().casefold()


class FairnessSettings(BaseModel):
    """The live window and where alerts go. Thresholds come from the policies."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=True, description="Keep fairness windows on routes that declare protected attributes."
    )
    window_size: int = Field(default=10_000, gt=0, description="Last N decisions per route.")
    window_seconds: float | None = Field(default=None, gt=0, description="...and/or the last T seconds.")
    webhook: str | None = Field(default=None, description="URL POSTed a JSON alert on warn/violation (timeout, retry).")
    intersectional: bool = Field(
        default=True, description="Also track intersections of protected attributes (always on when a policy asks)."
    )
    score_threshold: float | None = Field(
        default=None, description="When a route declares model.output but no model.favorable: selected = score >= this."
    )
    max_categories: int = Field(
        default=50, gt=0, description="Distinct values kept per protected attribute; later new ones count as `other`."
    )
    categories: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Allowed values per protected attribute, e.g. {sex: [Female, Male]}, matched ignoring case and "
                    "surrounding whitespace (`FEMALE` counts as `Female`, the name listed here); any other value "
                    "counts as `other`, so free text sent in a protected field never becomes a group name in "
                    "reports, metrics or the shared store. Values of attributes not listed are shown by keyed "
                    "digests (`sex=~3f09c1a2d4`), never in clear.",
    )
    unknown_values: list[str] = Field(
        default_factory=lambda: list(DEFAULT_UNKNOWN_VALUES),
        description="Values of any protected attribute that count as `unknown` (not stated, as LL144 reports it) "
                    "rather than `other` or a group of their own; matched ignoring case and surrounding whitespace. "
                    "A value also listed under `categories` counts as that category. A missing or empty value is "
                    "always `unknown`.",
    )
    webhook_timeout_s: float = Field(default=5.0, gt=0, description="Timeout of one webhook POST, in seconds.")
    webhook_retries: int = Field(default=3, ge=0, le=10, description="Webhook retries after a failed POST (backoff).")
    evaluate_every: int = Field(
        default=10, gt=0, description="Re-evaluate a route's status every N decisions (feedback always re-evaluates)."
    )
    alert_min_interval_s: float = Field(
        default=60.0, ge=0, description="Alerts per route at most this often, except when the status gets worse."
    )
    shared_store: str | None = Field(
        default=None, description="postgresql:// URL: keep the window's counts in the database, shared by all replicas."
    )
    bucket_seconds: int = Field(
        default=60, gt=0, description="Time bucket of the shared counts (the shared window moves by whole buckets)."
    )

    @field_validator("categories")
    @classmethod
    def _categories_distinct(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        """Two listed values that differ only in case or surrounding whitespace would be one group: say so rather
        than silently keep one. The message names the attribute, not the values."""
        for attribute, values in v.items():
            folded = [fold_category(x) for x in values]
            if "" in folded:
                raise ValueError(f"categories.{attribute} lists an empty value")
            if len(set(folded)) != len(folded):
                raise ValueError(f"categories.{attribute} lists a value twice (case and surrounding whitespace "
                                 "are ignored when values are matched)")
        return v

    @field_validator("shared_store")
    @classmethod
    def _shared_store_is_postgres(cls, v: str | None) -> str | None:
        """A SQLite URL here (by analogy with ``audit.store``) failed at start-up with psycopg's riddle
        ``missing "=" after "sqlite:///..." in connection info string``; ``:memory:`` could not be shared by the
        replicas either. Only PostgreSQL holds the shared window (a URL or a libpq ``key=value`` string)."""
        if v is not None and v.strip().lower().startswith("sqlite:"):
            raise ValueError("the shared fairness window lives in PostgreSQL (postgresql://...); a SQLite database "
                             "cannot be shared by the replicas: leave shared_store unset for a per-process window")
        return v
