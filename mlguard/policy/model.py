"""The policy file schema: what a policy file may say (the composed result lives in ``effective.py``).

Why this shape: a policy is read by two audiences. Counsel must see, next to every value, the provision it
comes from and whether that citation was checked against the legal text (``verify: true`` marks secondary
sources), so a value and its citation live together in one :class:`Rule`. The code must read plain typed values,
so composition (``mlguard.policy.compose``) turns one or more files into an :class:`EffectivePolicy` whose
sections hold plain values, with :meth:`EffectivePolicy.origin` saying which policy each value came from.

Every model forbids unknown keys: a misspelt safeguard in a compliance file must fail loudly, not vanish.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from mlguard.validation import compiled_regex

__all__ = [
    "KNOWN_ENTITIES",
    "OPERATOR_STRENGTH",
    "AuditSection",
    "CustomRecognizer",
    "Duration",
    "EntityRule",
    "ExplanationsSection",
    "FailureMode",
    "FairnessSection",
    "IsoDuration",
    "Operator",
    "OversightSection",
    "PIISection",
    "PatternSpec",
    "PolicyDoc",
    "RetentionSection",
    "Rule",
    "SignificanceCorrection",
    "Status",
    "parse_duration",
]

T = TypeVar("T")

Operator = Literal["replace", "mask", "drop", "hmac", "token", "encrypt", "generalize", "keep"]
FailureMode = Literal["fail_open", "fail_closed"]
Status = Literal["in_force", "enacted_not_yet_effective", "guidance", "engineering_default"]
FairnessAction = Literal["annotate", "alert", "block"]
Baseline = Literal["all", "cutoff"]
SignificanceCorrection = Literal["none", "holm", "bonferroni"]
"""Multiple-comparison correction of a dimension's significance tests (``mlguard.fairness.metrics.Correction``).

Not from any regulation: a statistical safeguard against false alarms when one dimension has many groups
(Holm 1979). ``none`` is the default and composes as the strictest, because it flags the most."""

OPERATOR_STRENGTH: tuple[Operator, ...] = (
    "keep", "mask", "generalize", "hmac", "encrypt", "token", "replace", "drop",
)
"""Operators from weakest to strongest; composition keeps the stronger one per entity.

Why this order: regulations.md fixes drop > random token > keyed pseudonym (hmac) > mask. The rest: ``replace``
leaves no information but keeps the document's shape, so it sits just below ``drop``; ``encrypt`` is reversible
by the key holder and derived from the value (HIPAA 164.514(c) prefers a random token), so it sits between
``hmac`` and ``token``; ``generalize`` (ZIP3, year, age cap) keeps less than a PCI mask (BIN + last four) but more
than a pseudonym; ``keep`` is no protection at all.
"""

KNOWN_ENTITIES: frozenset[str] = frozenset({
    # presidio-analyzer's own (its English recognizers; a test compares them with the installed presidio's)
    "PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "US_SSN", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS",
    "US_DRIVER_LICENSE", "US_PASSPORT", "US_BANK_NUMBER", "DATE_TIME", "LOCATION", "URL", "NRP",
    "MEDICAL_LICENSE", "US_ITIN", "CRYPTO", "ORGANIZATION", "MAC_ADDRESS", "UUID", "UK_NHS",
    # mlguard's recognizers (issue 3)
    "STREET_ADDRESS", "ZIP_CODE", "DATE_OF_BIRTH", "MEDICAL_RECORD_NUMBER", "HEALTH_PLAN_NUMBER",
    "ACCOUNT_NUMBER", "VEHICLE_ID", "DEVICE_ID", "AGE",
}) | frozenset({
    # recognizers of one country, loaded when pii_engine.countries names it: presidio-analyzer's (a test compares
    # them with the installed presidio's) and mlguard's FR_NIR
    "ABA_ROUTING_NUMBER", "AU_ABN", "AU_ACN", "AU_MEDICARE", "AU_TFN", "CA_POSTAL_CODE", "CA_SIN", "DE_BSNR",
    "DE_FUEHRERSCHEIN", "DE_HANDELSREGISTER", "DE_HEALTH_INSURANCE", "DE_ID_CARD", "DE_KFZ", "DE_LANR",
    "DE_PASSPORT", "DE_PLZ", "DE_SOCIAL_SECURITY", "DE_TAX_ID", "DE_TAX_NUMBER", "DE_VAT_ID", "ES_NIE", "ES_NIF",
    "ES_PASSPORT", "FI_PERSONAL_IDENTITY_CODE", "FR_NIR", "IN_AADHAAR", "IN_GSTIN", "IN_PAN", "IN_PASSPORT",
    "IN_VEHICLE_REGISTRATION", "IN_VOTER", "IT_DRIVER_LICENSE", "IT_FISCAL_CODE", "IT_IDENTITY_CARD",
    "IT_PASSPORT", "IT_VAT_CODE", "KR_BRN", "KR_DRIVER_LICENSE", "KR_FRN", "KR_PASSPORT", "KR_RRN", "NG_NIN",
    "NG_VEHICLE_REGISTRATION", "PH_PASSPORT", "PH_TIN", "PH_UMID", "PL_PESEL", "SE_ORGANISATIONSNUMMER",
    "SE_PERSONNUMMER", "SG_NRIC_FIN", "SG_UEN", "TH_TNIN", "TR_LICENSE_PLATE", "TR_NATIONAL_ID",
    "UK_DRIVING_LICENCE", "UK_NINO", "UK_PASSPORT", "UK_POSTCODE", "UK_VEHICLE_REGISTRATION", "US_CLAIM_NUMBER",
    "US_HEALTH_INSURANCE_MEMBER_ID", "US_MBI", "US_NPI", "US_PRESCRIPTION_NUMBER", "US_PRIOR_AUTHORIZATION_NUMBER",
    "US_PROVIDER_TAX_ID", "US_REFERRAL_NUMBER", "ZA_COMPANY_REGISTRATION", "ZA_DRIVER_LICENSE", "ZA_ID_NUMBER",
    "ZA_INCOME_TAX_NUMBER", "ZA_LICENSE_PLATE", "ZA_PASSPORT", "ZA_TRAFFIC_REGISTER_NUMBER", "ZA_VAT_NUMBER",
})
"""Entity names the PII stage knows, as data so that checks need no engine (presidio imports spaCy). Policies and
routes' ``pii`` maps may name others only with a custom recognizer for them (``mlguard.routes.known_entities``)."""

_ENTITY_RE = r"^[A-Z][A-Z0-9_]*$"
_ID_RE = r"^[a-z0-9][a-z0-9_.-]*$"
_DURATION_RE = re.compile(
    r"^P(?!$)(?:(?P<Y>\d+)Y)?(?:(?P<M>\d+)M)?(?:(?P<W>\d+)W)?(?:(?P<D>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?$"
)
_DAYS_PER_MONTH = 365.2425 / 12  # mean Gregorian month, only for ordering durations that mix units


# --------------------------------------------------------------------------------------------- durations

@dataclass(frozen=True, slots=True)
class IsoDuration:
    """An ISO 8601 duration kept in calendar units, because ``P6M`` is six months, not 180 days.

    Ordering uses the mean Gregorian month (``sort_key``) so that ``P25M`` > ``P2Y`` > ``P12M`` = ``P1Y``;
    :meth:`add_to` does calendar arithmetic (month end clamps: Jan 31 + P1M = Feb 28/29).
    """

    years: int = 0
    months: int = 0
    days: int = 0
    seconds: int = 0

    @property
    def sort_key(self) -> float:
        """Approximate length in days, only for comparing durations."""
        return (self.years * 12 + self.months) * _DAYS_PER_MONTH + self.days + self.seconds / 86400

    def add_to(self, moment: datetime) -> datetime:
        """``moment`` plus this duration, months first (calendar), then days and seconds."""
        total = moment.month - 1 + self.months + 12 * self.years
        year, month = moment.year + total // 12, total % 12 + 1
        day = min(moment.day, calendar.monthrange(year, month)[1])
        return moment.replace(year=year, month=month, day=day) + timedelta(days=self.days, seconds=self.seconds)

    def subtract_from(self, moment: datetime) -> datetime:
        """``moment`` minus this duration: the cut-off before which a record is older than the duration."""
        total = moment.month - 1 - self.months - 12 * self.years
        year, month = moment.year + total // 12, total % 12 + 1
        day = min(moment.day, calendar.monthrange(year, month)[1])
        return moment.replace(year=year, month=month, day=day) - timedelta(days=self.days, seconds=self.seconds)


def parse_duration(text: str) -> IsoDuration:
    """Parse ``PnYnMnWnDTnHnMnS`` (integers only); raise ValueError naming the expected form."""
    match = _DURATION_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError("must be an ISO 8601 duration such as P6M, P1Y, P25M, P30D or PT12H")
    g = {k: int(v) if v else 0 for k, v in match.groupdict().items()}
    return IsoDuration(years=g["Y"], months=g["M"], days=g["D"] + 7 * g["W"],
                       seconds=g["h"] * 3600 + g["m"] * 60 + g["s"])


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text


Duration = Annotated[str, AfterValidator(_check_duration)]
"""An ISO 8601 duration string, validated at load (``P6M``, ``P6Y``, ``P30D``)."""

EntityName = Annotated[str, Field(pattern=_ENTITY_RE)]
Zip3 = Annotated[str, Field(pattern=r"^\d{3}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------------- the file schema

class Rule(_Strict, Generic[T]):
    """One value with its citation. ``verify: true``: the citation was seen only in secondary sources."""

    value: T
    cite: str = Field(min_length=1, description="Provision the value comes from; (D) for engineering defaults.")
    verify: bool = Field(default=False, description="True where the source is secondary and counsel should check it.")
    note: str | None = Field(default=None, description="Why this value, in a sentence.")
    applies_from: date | None = Field(default=None, description="When the provision starts to apply, if later.")


_PARAM_SPECS: dict[str, dict[str, type]] = {
    "mask": {"keep_first": int, "keep_last": int, "char": str},
    "generalize": {"zip": str, "date": str, "age_cap": int},
    "replace": {"text": str},
}
_GENERALIZE = {"zip": {"zip3"}, "date": {"year"}}


class EntityRule(_Strict):
    """What happens to one entity type: the operator, its parameters, and why."""

    entity: EntityName
    operator: Operator
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="mask: keep_first, keep_last, char; generalize: zip=zip3 | date=year | age_cap=N; "
                    "replace: text.",
    )
    cite: str = Field(min_length=1)
    verify: bool = False
    note: str | None = None

    @model_validator(mode="after")
    def _params_fit_operator(self) -> EntityRule:
        allowed = _PARAM_SPECS.get(self.operator, {})
        for key, val in self.params.items():
            if key not in allowed:
                raise ValueError(f"operator {self.operator!r} takes no parameter {key!r} "
                                 f"(allowed: {', '.join(sorted(allowed)) or 'none'})")
            if not isinstance(val, allowed[key]) or isinstance(val, bool):
                raise ValueError(f"parameter {key!r} must be {allowed[key].__name__}")
            if isinstance(val, int) and val < 0:
                raise ValueError(f"parameter {key!r} must not be negative")
        if self.operator == "generalize":
            if len(self.params) != 1:
                raise ValueError("generalize takes exactly one of zip: zip3, date: year, age_cap: N")
            (key, val), = self.params.items()
            if key in _GENERALIZE and val not in _GENERALIZE[key]:
                raise ValueError(f"generalize {key} must be one of {sorted(_GENERALIZE[key])}")
        if self.operator == "mask" and len(self.params.get("char", "*")) != 1:
            raise ValueError("mask char must be one character")
        return self


class PatternSpec(_Strict):
    name: str = Field(min_length=1)
    regex: str = Field(min_length=1)
    score: float = Field(ge=0.0, le=1.0)

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str) -> str:
        return compiled_regex(v)


class CustomRecognizer(_Strict):
    """A pattern recognizer declared in a policy (issue 3): patterns, context words, an optional validator."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    entity: EntityName
    patterns: list[PatternSpec] = Field(min_length=1)
    context: list[str] = Field(default_factory=list, description="Words near a match that raise its score.")
    validator: Literal["luhn", "none"] = "none"
    cite: str = Field(min_length=1)
    verify: bool = False
    note: str | None = None


class PIISection(_Strict):
    entities: list[EntityRule] = Field(default_factory=list)
    default_operator: Rule[Operator] | None = None
    scan_response: Rule[bool] | None = None
    protected_to_model: Rule[bool] | None = None
    special_categories_separate: Rule[bool] | None = None
    restricted_zip3: Rule[list[Zip3]] | None = None
    custom_recognizers: list[CustomRecognizer] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> PIISection:
        for what, names in (("entity", [e.entity for e in self.entities]),
                            ("recognizer", [r.name for r in self.custom_recognizers])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{what} listed twice: {', '.join(dupes)}")
        return self


class RetentionSection(_Strict):
    min: Rule[Duration] | None = None
    max: Rule[Duration] | None = None
    max_required: Rule[bool] | None = None
    erasure_within: Rule[Duration] | None = None


class ExplanationsSection(_Strict):
    required: Rule[bool] | None = None
    reasons_on_adverse: Rule[bool] | None = None
    max_reasons: Rule[Annotated[int, Field(ge=1)]] | None = None
    budget_ms: Rule[Annotated[float, Field(gt=0)]] | None = None
    baseline: Rule[Baseline] | None = None
    prohibited_bases: Rule[list[str]] | None = None
    insufficient_reason_texts: Rule[list[str]] | None = None
    counterfactuals: Rule[bool] | None = None
    notice_within: Rule[Duration] | None = None


_Ratio = Annotated[float, Field(ge=0.0, le=1.0)]


class FairnessSection(_Strict):
    min_impact_ratio: Rule[_Ratio] | None = None
    max_demographic_parity_difference: Rule[_Ratio] | None = None
    max_equalized_odds_difference: Rule[_Ratio] | None = None
    min_group_size: Rule[Annotated[int, Field(ge=1)]] | None = None
    exclude_below_share: Rule[_Ratio] | None = None
    significance_alpha: Rule[Annotated[float, Field(gt=0.0, lt=1.0)]] | None = None
    significance_correction: Rule[SignificanceCorrection] | None = None
    action: Rule[FairnessAction] | None = None
    report_unknown: Rule[bool] | None = None
    intersectional: Rule[bool] | None = None
    audit_max_age: Rule[Duration] | None = None


class OversightSection(_Strict):
    stop_control: Rule[bool] | None = None
    human_review: Rule[bool] | None = None
    contest: Rule[bool] | None = None
    log_solely_automated: Rule[bool] | None = None


class AuditSection(_Strict):
    required: Rule[bool] | None = None
    encrypt: Rule[bool] | None = None
    record_reads: Rule[bool] | None = None
    tamper_evident: Rule[bool] | None = None


SECTIONS: tuple[str, ...] = ("pii", "retention", "explanations", "fairness", "oversight", "audit")


class PolicyDoc(_Strict):
    """One policy file. Sections left out inherit from ``extends`` (and finally from ``base``)."""

    id: str = Field(pattern=_ID_RE, description="Short name, e.g. gdpr; the file is usually <id>.yaml.")
    title: str = Field(min_length=1)
    instrument: str = Field(min_length=1, description="The legal instrument, e.g. Regulation (EU) 2016/679.")
    jurisdiction: str = Field(min_length=1)
    status: Status
    effective_from: date
    review_by: date = Field(description="Re-check the policy against the law before this date.")
    version: str = Field(min_length=1)
    extends: list[str] = Field(default_factory=list, description="Bundled names or paths, applied in order.")
    scope: str | None = Field(default=None, description="Which uses the policy is meant for.")
    url: str | None = None
    notes: str | None = None
    failure_mode: Rule[FailureMode] | None = None
    pii: PIISection = Field(default_factory=PIISection)
    retention: RetentionSection = Field(default_factory=RetentionSection)
    explanations: ExplanationsSection = Field(default_factory=ExplanationsSection)
    fairness: FairnessSection = Field(default_factory=FairnessSection)
    oversight: OversightSection = Field(default_factory=OversightSection)
    audit: AuditSection = Field(default_factory=AuditSection)

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, v: Any) -> Any:
        """``version: 2026.11`` unquoted is a YAML float; accept it as the text the author meant."""
        return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
