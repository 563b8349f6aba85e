"""JSON-aware redaction: field rules by JSONPath, one NLP pass over all scanned strings, operators per entity.

Rules (from the route's ``pii`` map, nearest enclosing path wins, a path may name an object or array):

- ``ENTITY``: the whole value is that entity; the entity's operator replaces it. No detection (sub-millisecond).
- ``scan``: detect spans inside the string and replace each with its entity's operator.
- ``keep``: leave it.
- no rule: strings are scanned when ``scan_undeclared`` is on; numbers, booleans and null are untouched. Except
  a value whose member name says what it is (``cvv``, ``securityCode``, ``ssn``...: ``MEMBER_HINTS``): it is
  taken whole as that entity, as a declared field is, a number included (finding recognizer ``member-name``).

Why two phases (``prepare`` then ``detect`` then ``finish``): the walk and the declared fields are cheap and run
inline; only the detection of uncached scanned strings is CPU work, done in ONE batched call that the stage runs
off the event loop. Strings too long to scan, or holding NUL or lone surrogates, are replaced whole by
``<REDACTED>`` with an ``UNSCANNED`` finding: never sent to the engine, never passed on in clear.

The scan budget (``pii_engine.max_scan_chars`` / ``max_scan_texts``, see PIIEngineSettings): ``prepare`` counts
what detection would cost (the distinct strings left after the cache, and their characters) and, when asked,
applies the budget there, before any NER: ``budget="refuse"`` raises ScanBudgetExceeded (the request path),
``budget="withhold"`` withholds every string left to scan, as for an unscannable one (the response path). The
default, no budget, is what the CLI and ``redact`` use. A string over ``max_field_chars`` is withheld before it
is counted, and the settings keep ``max_field_chars`` within ``max_scan_chars``, so one string alone never earns
the refusal (a longer one would otherwise be withheld while a shorter one refused its whole request).

Findings carry entity, JSON path, offsets in the original string, recognizer, score and operator; never values.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mlguard.config.pii import PIIEngineSettings
from mlguard.errors import ScanBudgetExceeded
from mlguard.jsonpath import JSONPath, format_location
from mlguard.pii.operators import DROP, Keyring, Operator, TokenVault, build_operator
from mlguard.types import JSON, Finding

if TYPE_CHECKING:
    from mlguard.pii.engine import PIIEngine, Span

KEEP = "keep"
SCAN = "scan"
UNSCANNED = "UNSCANNED"
REDACTED = "<REDACTED>"

Rules = Sequence[tuple[JSONPath, str]]
Location = tuple[str | int, ...]
Budget = Literal["refuse", "withhold"]


MEMBER_NAME = "member-name"
"""The recognizer named in findings for a value taken whole because of its JSON member's name."""


@dataclass(frozen=True, slots=True)
class MemberHint:
    """What a member name says its value is, and the least a value must look like to be taken as that.

    ``min_digits``: digits the value must hold; ``numbers``: a JSON number can be this entity; ``needs``: a
    character a string must hold. A value that fails these is not taken whole, only scanned as before (so a
    hint never protects less than detection alone): ``"pan": 0.25`` is a camera's pan, ``"phone": "unknown"``
    and ``"email": "opt-in"`` are no identifiers, and turning them into ``<ENTITY>`` would break the app."""

    entity: str
    min_digits: int = 0
    numbers: bool = True
    needs: str = ""


_CVV = MemberHint("CARD_VERIFICATION_CODE", min_digits=1)
_CARD = MemberHint("CREDIT_CARD", min_digits=12)
_SSN = MemberHint("US_SSN", min_digits=4)
_DOB = MemberHint("DATE_OF_BIRTH", min_digits=2)
_PHONE = MemberHint("PHONE_NUMBER", min_digits=7)

MEMBER_HINTS: dict[str, MemberHint] = {
    # Card verification code (PCI DSS 3.3.1.2: never stored after authorisation, even encrypted). The names
    # gateways and card forms use: Stripe/Adyen ``cvc``, Braintree ``cvv``, Authorize.net ``cardCode``, Adyen
    # ``securityCode``. Not ``cid`` (Amex's name, but a client, correlation or content id in most APIs), not
    # ``code`` (promo, country, error codes), not ``verification_code`` (e-mail/SMS one-time codes), not ``pin``
    # (map and GPIO pins, India's postal PIN code): those are scanned like any string, and the policy's CVV
    # recognizer still takes a 3-4 digit number next to "cvv", "cid"... in the text.
    **dict.fromkeys(("cvv", "cvv2", "cvc", "cvc2", "cvn", "cardcvv", "cardcvc", "cardcvv2", "cardcvc2", "cvvcode",
                     "cvccode", "cvvnumber", "securitycode", "cardsecuritycode", "cardcode",
                     "cardverificationcode", "cardverificationvalue", "cardverificationnumber"), _CVV),
    # Primary account number. ``pan`` only with 12+ digits (a camera or audio pan is a small number).
    **dict.fromkeys(("pan", "primaryaccountnumber", "cardnumber", "cardno", "cardnum", "creditcardnumber",
                     "creditcardno", "debitcardnumber", "ccnumber", "ccnum", "ccno"), _CARD),
    **dict.fromkeys(("ssn", "socialsecuritynumber", "socialsecurityno"), _SSN),
    **dict.fromkeys(("dob", "dateofbirth", "birthdate", "birthday"), _DOB),
    **dict.fromkeys(("phone", "phonenumber", "phoneno", "telephone", "telephonenumber", "mobilenumber",
                     "mobilephone", "cellphone", "cellnumber"), _PHONE),
    "iban": MemberHint("IBAN_CODE", min_digits=2, numbers=False),
    **dict.fromkeys(("email", "emailaddress"), MemberHint("EMAIL_ADDRESS", numbers=False, needs="@")),
    # A person's name: only the names that cannot mean anything else (not ``name``: a product's, a file's, a
    # model's). A security review sent {"applicant": [{"full_name": "Zephyrine Quackenbush"}]}: spaCy's small
    # model does not know the name, and the member said what it was. A JSON number is no name.
    **dict.fromkeys(("fullname", "firstname", "lastname", "surname", "givenname", "givennames", "familyname",
                     "middlename", "maidenname", "forename", "forenames", "legalname", "birthname",
                     "applicantname", "customername", "patientname", "candidatename", "employeename",
                     "cardholdername", "accountholdername", "contactname", "nextofkin"),
                    MemberHint("PERSON", numbers=False)),
    # The policies name passport numbers US_PASSPORT, so that is the entity whose operator they choose.
    **dict.fromkeys(("passportnumber", "passportno"), MemberHint("US_PASSPORT", min_digits=1)),
}
"""Member names (normalised: case-folded, everything but letters and digits removed, so ``securityCode``,
``security-code`` and ``SECURITY_CODE`` are one name) whose value, when it would otherwise only be scanned, is
taken whole as the entity.

Why: a payments user's ``{"payment": {"cvv": "737"}}`` reached the model and the audit record in clear under
``pci_dss``; the CVV recognizer needs a context word in the text, and "737" alone has none; a CVV sent as the
number 737 was not even looked at (numbers are not scanned). The member name is that context. A name matches
whole, never as a part (``cvc_check: "pass"``, ``cvv_result: "M"`` are a gateway's results, not the code), and
only names that mean one thing are listed. A route rule on the value always wins (``keep`` included); where
nothing is scanned (``scan_undeclared`` off) there are no hints either."""

_NOT_NAME_CHARS = re.compile(r"[\W_]+")


@functools.lru_cache(maxsize=4096)
def _hint_of(name: str) -> MemberHint | None:
    """The hint of a member name, normalised (case and separators ignored). Cached: the walk asks for every
    scanned value of every request, and a service's member names repeat (about 40 per request in the credit
    example: the regex and casefold cost more than the rest of the hint check)."""
    return MEMBER_HINTS.get(_NOT_NAME_CHARS.sub("", name.casefold()))


def member_hint(name: str, value: Any) -> str | None:
    """The entity ``value`` is taken as because of its member ``name`` (MEMBER_HINTS), or None."""
    if isinstance(value, bool) or not isinstance(value, str | int | float) or value == "":
        return None
    hint = _hint_of(name)
    if hint is None:
        return None
    if isinstance(value, str):
        text = value
        if hint.needs and hint.needs not in text:
            return None
    elif hint.numbers:
        text = str(value) if isinstance(value, int) else repr(value)
    else:
        return None
    if hint.min_digits and sum(c.isdigit() for c in text) < hint.min_digits:
        return None
    return hint.entity


@dataclass(slots=True)
class _Pending:
    """A scanned string waiting for detection: where it goes in the new document."""

    container: Any
    key: str | int
    text: str
    path: str
    spans: list[Span] | None = None
    withheld: bool = False


_SCHEMA_NAME = re.compile(r"[A-Za-z][a-z0-9]*(?:[A-Z][a-z0-9]*)*(?:[_.-][a-zA-Z0-9]+)*|[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")
_DIGIT_RUN = re.compile(r"\d{4}")


def schema_name(name: str) -> bool:
    """Whether a JSON member name reads as a field of a schema (``first``, ``claim_id``, ``firstName``,
    ``FirstName``, ``Email``, ``x-request-id``, ``FIRST_NAME``) rather than as data: such names are neither
    scanned nor replaced.

    Why a rule at all: objects keyed by data (``{"Zephyrine Quackenbush": "zq@quackmail.eu"}``, a map from
    IBANs to roles) passed their names to the model in clear, only values being scanned; scanning every name
    instead would send each schema's field names through NER on first sight, and count them against the
    request's scan budget. So a name with a space, an ``@``, a run of four digits, or anything but letters,
    digits and ``_ . -`` is treated as data. PascalCase is a schema's (.NET clients send ``{"Email": ...}``,
    which NER read as a PERSON and renamed); a one-word name as a key (``Zephyrine``, ``zephyrine``) is
    therefore not scanned: a known limit."""
    return len(name) <= 64 and _schema_name(name)


@functools.lru_cache(maxsize=8192)  # a schema's names repeat on every request: one regex pass each, once
def _schema_name(name: str) -> bool:
    return _SCHEMA_NAME.fullmatch(name) is not None and _DIGIT_RUN.search(name) is None


_LONG_INT = 10**8
"""Integers of nine digits or more are scanned as text: card numbers, SSNs, phone and account numbers sent as
JSON numbers; shorter ones (amounts, counts, ages, years) cannot hold those identifiers."""


class _Names:
    """The member names of one object queued for detection. ``finish`` writes a name's redacted form here
    (as it writes a scanned value into its container); the object's members are renamed once every value below
    them is in place, and finding paths that used the name's placeholder then show the redacted name."""

    __slots__ = ("loc", "obj", "placeholders", "renamed")

    def __init__(self, obj: dict[str, Any], loc: Location) -> None:
        self.obj = obj
        self.loc = loc
        self.renamed: dict[str, str] = {}
        self.placeholders: dict[str, str] = {}  # original name -> its placeholder in paths

    def __setitem__(self, name: str, redacted: str) -> None:
        self.renamed[name] = redacted


@dataclass(slots=True)
class Plan:
    """The result of ``prepare``: the new document, findings so far, and strings left to detect."""

    doc: JSON
    findings: list[Finding] = field(default_factory=list)
    pending: list[_Pending] = field(default_factory=list)
    drops: list[tuple[Any, str | int]] = field(default_factory=list)
    scan_texts: int = 0  # distinct strings detection would send to the engine (cache hits not counted)
    scan_chars: int = 0  # their characters
    declared: list[tuple[str, str]] = field(default_factory=list)  # (entity, value) of declared fields: see echoes
    names: list[_Names] = field(default_factory=list)  # objects whose member names are scanned (schema_name)
    root: list[JSON] = field(default_factory=lambda: [None])
    """The holder of the document's root: ``finish`` writes a scanned top-level string into it, so the result is
    read from here. Why: the result was taken before that write, so a body that was one JSON string reached the
    app and the audit record in clear while its findings were counted (MLGuard-Redactions: 4)."""

    @property
    def needs_engine(self) -> bool:
        return any(p.spans is None for p in self.pending)


class SpanCache:
    """Bounded LRU of detection results keyed by a keyed hash of the text (the text itself is never kept)."""

    def __init__(self, size: int, key: bytes) -> None:
        self.size = size
        self._key = key
        self._data: OrderedDict[bytes, tuple[Span, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def digest(self, text: str) -> bytes:
        return hmac.new(self._key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()[:16]

    def get(self, digest: bytes) -> tuple[Span, ...] | None:
        if self.size <= 0:
            return None
        with self._lock:
            hit = self._data.get(digest)
            if hit is not None:
                self._data.move_to_end(digest)
            return hit

    def put(self, digest: bytes, spans: Sequence[Span]) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._data[digest] = tuple(spans)
            self._data.move_to_end(digest)
            while len(self._data) > self.size:
                self._data.popitem(last=False)


class Redactor:
    """Redacts JSON documents by the policy's operators. Build once; ``redact`` is thread-safe.

    ``entities`` is ``policy.pii.entities`` (entity -> rule with ``operator`` and ``params``); an empty map means
    "detect everything Presidio and mlguard know, replace with ``<ENTITY>``".
    """

    def __init__(self, entities: Mapping[str, Any] | None, settings: PIIEngineSettings | None = None, *,
                 default_operator: str = "replace", restricted_zip3: Sequence[str] = (),
                 keyring: Keyring | None = None, vault: TokenVault | None = None,
                 engine: PIIEngine | Callable[[], PIIEngine] | None = None,
                 custom_recognizers: Sequence[Mapping[str, Any]] = ()) -> None:
        self.settings = settings or PIIEngineSettings()
        self._keyring = keyring
        self._vault = vault
        self._restricted = [str(z) for z in restricted_zip3]
        self._custom = list(custom_recognizers)
        self.operators: dict[str, Operator] = {}
        for name, rule in (entities or {}).items():
            kind, params = _rule_parts(rule)
            self.operators[name] = self._build(name, kind, params)
        self.default_operator = default_operator
        self._build("DEFAULT", default_operator if default_operator != "generalize" else "replace", {})
        # Entities no rule names get the default operator: unless it is ``keep``, detect everything.
        named = [e for e, op in self.operators.items() if op.kind != KEEP]
        self.detect_entities: frozenset[str] | None = (
            frozenset(named) if default_operator == KEEP else None)
        self._engine = engine
        cache_key = keyring.secret("pii.cache") if keyring is not None else os.urandom(32)
        self.cache = SpanCache(self.settings.cache_size, cache_key)

    @classmethod
    def from_policy(cls, pii: Any, settings: PIIEngineSettings | None = None, *, keyring: Keyring | None = None,
                    vault: TokenVault | None = None, engine: PIIEngine | Callable[[], PIIEngine] | None = None
                    ) -> Redactor:
        """Build from an effective policy's ``pii`` section (entities, default_operator, restricted_zip3,
        custom_recognizers)."""
        custom = [r.model_dump() if hasattr(r, "model_dump") else dict(r)
                  for r in getattr(pii, "custom_recognizers", None) or []]
        return cls(getattr(pii, "entities", None) or {}, settings,
                   default_operator=str(getattr(pii, "default_operator", "replace") or "replace"),
                   restricted_zip3=list(getattr(pii, "restricted_zip3", None) or []),
                   keyring=keyring, vault=vault, engine=engine, custom_recognizers=custom)

    def _build(self, entity: str, kind: str, params: Mapping[str, Any]) -> Operator:
        params = dict(params)
        if kind == "generalize" and self._restricted:
            params.setdefault("restricted_zip3", self._restricted)
        return build_operator(entity, kind, params, keyring=self._keyring, vault=self._vault)

    # ------------------------------------------------------------------ engine

    @property
    def engine(self) -> PIIEngine:
        """The detection engine, built (once per process) on first need."""
        eng = self._engine
        if eng is None:
            from mlguard.pii.engine import get_engine

            built = get_engine(self.settings, self._custom)
        elif hasattr(eng, "analyze_many"):
            return eng  # type: ignore[return-value]
        else:
            built = eng()
        self._engine = built
        return built

    def operator_for(self, entity: str) -> Operator:
        op = self.operators.get(entity)
        if op is None:
            kind = self.default_operator
            if kind == "generalize" and entity not in ("ZIP_CODE", "DATE_OF_BIRTH", "DATE_TIME", "AGE"):
                kind = "replace"
            op = self._build(entity, kind, {})
            self.operators.setdefault(entity, op)
        return op

    # ------------------------------------------------------------------ public API

    def redact(self, doc: JSON, rules: Rules = (), scan_undeclared: bool | None = None
               ) -> tuple[JSON, list[Finding]]:
        """Redact one document; returns (new document, findings). ``doc`` is never mutated."""
        plan = self.prepare(doc, rules, scan_undeclared)
        if plan.needs_engine:
            self.detect([plan])
        return self.finish(plan)

    def redact_many(self, docs: Sequence[JSON], rules: Rules = (), scan_undeclared: bool | None = None
                    ) -> list[tuple[JSON, list[Finding]]]:
        """Redact several documents with ONE detection pass over all their scanned strings."""
        plans = [self.prepare(d, rules, scan_undeclared) for d in docs]
        self.detect(plans)
        return [self.finish(p) for p in plans]

    # ------------------------------------------------------------------ phases

    def prepare(self, doc: JSON, rules: Rules = (), scan_undeclared: bool | None = None, *,
                budget: Budget | None = None) -> Plan:
        """Walk ``doc``: copy it, apply declared fields, queue strings to scan (cache hits resolved now).

        ``budget`` applies ``max_scan_chars``/``max_scan_texts`` to what is left to detect: ``"refuse"`` raises
        ScanBudgetExceeded, ``"withhold"`` withholds it all (UNSCANNED, ``limit:<name>``); None: no budget."""
        scan = self.settings.scan_undeclared if scan_undeclared is None else scan_undeclared
        default = SCAN if scan else KEEP
        plan = Plan(doc=None)
        match = _matcher(rules)
        self._walk(doc, (), plan.root, 0, match(()) or default, match, default, plan, None)
        plan.doc = plan.root[0]
        todo: set[str] = set()
        for pending in plan.pending:
            hit = self.cache.get(self.cache.digest(pending.text))
            if hit is not None:
                pending.spans = list(hit)
            else:
                todo.add(pending.text)
        plan.scan_texts = len(todo)
        plan.scan_chars = sum(map(len, todo))
        if budget is not None:
            exceeded = self.over_budget(plan)
            if exceeded is not None:
                if budget == "refuse":
                    raise exceeded
                self.withhold(plan, f"limit:{exceeded.limit}")
        return plan

    def over_budget(self, plan: Plan) -> ScanBudgetExceeded | None:
        """The refusal ``plan`` earns under ``max_scan_texts`` / ``max_scan_chars`` (0 = no limit), or None.
        The detail holds counts and the limit, never text."""
        s = self.settings
        if s.max_scan_texts and plan.scan_texts > s.max_scan_texts:
            return ScanBudgetExceeded(
                f"{plan.scan_texts} distinct strings to scan for personal data exceed "
                f"pii_engine.max_scan_texts={s.max_scan_texts}; send fewer free-text values per request",
                limit="max_scan_texts")
        if s.max_scan_chars and plan.scan_chars > s.max_scan_chars:
            return ScanBudgetExceeded(
                f"{plan.scan_chars} characters of text to scan for personal data exceed "
                f"pii_engine.max_scan_chars={s.max_scan_chars}; send less free text per request",
                limit="max_scan_chars")
        return None

    def detect(self, plans: Sequence[Plan]) -> None:
        """Run detection for every unresolved string of ``plans`` in one batched engine call."""
        todo = [p for plan in plans for p in plan.pending if p.spans is None]
        if not todo:
            return
        unique: dict[str, list[_Pending]] = {}
        for p in todo:
            unique.setdefault(p.text, []).append(p)
        texts = list(unique)
        results = self.engine.analyze_many(texts, self.detect_entities)
        for text, spans in zip(texts, results, strict=True):
            self.cache.put(self.cache.digest(text), spans)
            for p in unique[text]:
                p.spans = list(spans)

    def withhold(self, plan: Plan, reason: str) -> None:
        """Replace every string still waiting for detection by ``<REDACTED>`` (finding UNSCANNED, ``reason``):
        what the engine could not scan is withheld, never passed on in clear. ``finish`` then applies the rest
        (declared fields, cached detections) as usual."""
        for p in plan.pending:
            if p.spans is None:
                p.container[p.key] = REDACTED
                plan.findings.append(Finding(UNSCANNED, p.path, 0, len(p.text), reason, 1.0, "replace"))
                p.spans = []
                p.withheld = True

    def finish(self, plan: Plan) -> tuple[JSON, list[Finding]]:
        """Apply the detected spans' operators and return (document, findings)."""
        echoes = _Echoes(plan.declared) if plan.declared and any(not p.withheld for p in plan.pending) else None
        for p in plan.pending:
            spans = p.spans or []
            if echoes is not None and not p.withheld:
                found = echoes.find(p.text)
                if found:
                    from mlguard.pii.engine import merge_spans

                    spans = merge_spans([*spans, *found])
            spans = [s for s in spans if self.operator_for(s.entity).kind != KEEP]
            if not spans:
                continue
            out: list[str] = []
            pos = 0
            for s in spans:
                op = self.operator_for(s.entity)
                out.append(p.text[pos:s.start])
                out.append(op.apply_span(p.text[s.start:s.end]))
                pos = s.end
                plan.findings.append(Finding(s.entity, p.path, s.start, s.end, s.recognizer, s.score, op.kind))
            out.append(p.text[pos:])
            p.container[p.key] = "".join(out)
        for container, key in reversed(plan.drops):
            if isinstance(container, dict):
                container.pop(key, None)
            else:
                container[key] = None
        if plan.names:
            self._rename(plan)
        plan.findings.sort(key=lambda f: (f.path, f.start if f.start is not None else -1))
        plan.doc = plan.root[0]  # a top-level string is rewritten in the holder itself
        return plan.doc, plan.findings

    def _rename(self, plan: Plan) -> None:
        """Give scanned member names their redacted form (made unique with ``#2``... when two map to one, so no
        member is lost), in place and in order, then rewrite the finding paths that used their placeholders."""
        paths: list[tuple[str, str]] = []
        for names in plan.names:
            obj = names.obj
            used = {k for k in obj if k not in names.renamed}  # names that stay keep their place
            final: dict[str, str] = {}
            for name in obj:
                if name not in names.renamed:
                    final[name] = name
                    continue
                new = candidate = names.renamed[name]
                n = 1
                while candidate in used:
                    n += 1
                    candidate = f"{new}#{n}"
                used.add(candidate)
                final[name] = candidate
            items = [(final[k], v) for k, v in obj.items()]
            obj.clear()
            obj.update(items)
            for name, placeholder in names.placeholders.items():
                if name in final:
                    paths.append((_segment(placeholder), _segment(final[name])))
        if paths:
            plan.findings[:] = [f if "<name#" not in f.path else _repath(f, paths) for f in plan.findings]

    # ------------------------------------------------------------------ walk

    def _walk(self, node: JSON, loc: Location, container: Any, key: str | int, rule: str,
              match: Callable[[Location], str | None], default: str, plan: Plan, member: str | None) -> None:
        """Copy ``node`` into ``container[key]`` under ``rule``. ``member``: the name of the nearest enclosing
        member with only array steps in between (``{"phone": ["...", "..."]}``), whose hint a scanned value takes."""
        if isinstance(node, dict):
            new: dict[str, Any] = {}
            container[key] = new
            # Under a declared entity the member NAMES are part of the value too ({"<ssn>": 1} is an SSN):
            # each is replaced by the entity's operator, and the redacted name is what paths show from here on.
            op = None if rule in (KEEP, SCAN) else self.operator_for(rule)
            if op is not None and op.kind == KEEP:
                op = None
            names: _Names | None = None
            for k, v in node.items():
                segment = name = k
                if (op is None and rule != SCAN) or schema_name(k):
                    pass
                elif op is not None:
                    segment = name = self._redact_name(k, op, new, loc, rule, plan)
                elif rule == SCAN:
                    # Data used as a name: scanned like a value; below it, paths use a placeholder until the
                    # redacted name is known (finish), so no finding path ever holds the name itself.
                    if names is None:
                        names = _Names(new, loc)
                        plan.names.append(names)
                    segment = names.placeholders[k] = f"<name#{len(plan.names)}.{len(names.placeholders) + 1}>"
                    self._queue(k, (*loc, segment), names, k, plan)
                here = (*loc, segment)
                self._walk(v, here, new, name, match(here) or rule, match, default, plan, name)
            return
        if isinstance(node, list):
            new_list: list[Any] = [None] * len(node)
            container[key] = new_list
            for i, v in enumerate(node):
                here = (*loc, i)
                self._walk(v, here, new_list, i, match(here) or rule, match, default, plan, member)
            return
        container[key] = node
        if node is None or rule == KEEP:
            return
        recognizer = "declared"
        if rule == SCAN:
            # A member name that says what the value is makes it that entity, unless a route rule names this
            # very value (then the route decided: a rule always wins over a hint).
            hinted = member_hint(member, node) if member is not None else None
            if hinted is None or match(loc) is not None or self.operator_for(hinted).kind == KEEP:
                if isinstance(node, str) and node:
                    self._queue(node, loc, container, key, plan)
                elif type(node) is int and abs(node) >= _LONG_INT:
                    # {"card": 4111111111111111}: an identifier sent as a JSON number passed unscanned (only
                    # strings were). Its digits are scanned as text; found, it becomes the redacted string.
                    self._queue(str(node), loc, container, key, plan)
                return
            rule, recognizer = hinted, MEMBER_NAME
        # A declared entity: the whole value, whatever its type (a number SSN is still an SSN).
        op = self.operator_for(rule)
        if op.kind == KEEP:
            return
        if isinstance(node, bool):
            # true/false carry no identifier; replacing one with a string changed the request's type (a value
            # the app would refuse became one it accepts). Found by fuzzing.
            return
        if isinstance(node, str | int) and not isinstance(node, bool):
            plan.declared.append((rule, str(node)))
        out = op.apply(node)
        path = format_location(loc)
        length = len(node) if isinstance(node, str) else None
        plan.findings.append(Finding(rule, path, 0 if length is not None else None, length, recognizer, 1.0,
                                     op.kind))
        if out is DROP:
            plan.drops.append((container, key))
        else:
            container[key] = out

    def _redact_name(self, name: str, op: Operator, taken: dict[str, Any], loc: Location, entity: str,
                     plan: Plan) -> str:
        """The redacted form of a member name inside a declared entity; made unique (``#2``...) when the
        operator maps several names to one (``replace`` does), so no member is lost."""
        out = op.apply_span(name)
        candidate, n = out, 1
        while candidate in taken:
            n += 1
            candidate = f"{out}#{n}"
        plan.findings.append(Finding(entity, format_location((*loc, candidate)), None, None, "declared-name", 1.0,
                                     op.kind))
        return candidate

    def _queue(self, text: str, loc: Location, container: Any, key: str | int, plan: Plan) -> None:
        path = format_location(loc)
        reason = _unscannable(text, self.settings.max_field_chars)
        if reason is not None:
            container[key] = REDACTED
            plan.findings.append(Finding(UNSCANNED, path, 0, len(text), reason, 1.0, "replace"))
            return
        plan.pending.append(_Pending(container, key, text, path))


ECHO = "declared-echo"
"""The recognizer named in findings for a declared field's value found again inside a scanned string."""
_ECHO_MIN_CHARS = 3
_ECHO_MIN_DIGITS = 4


class _Echoes:
    """The values of one document's declared fields, found again in its scanned strings.

    Why: a request that declares ``$.patient.name: PERSON`` and also sends a note "Percival Dunwoody seen today"
    told us the exact identifier, yet the note relied on NER alone, which missed it (a new user's HIPAA trial:
    the declared field was tokenized, the same name in the note reached the model in clear). So each declared
    value is also searched, as a whole word, in the document's scanned strings, case-insensitively, and becomes a
    span of its declared entity (score 1.0), merged with what detection found (``merge_spans``: the union, so
    nothing is left partly in clear). A PERSON value's words are searched too ("Mr Dunwoody"), capitalised as
    declared, so the common-word sense ("Baker" the name vs "baker") is not touched. Values shorter than three
    characters, and numbers of fewer than four digits, are not searched: too likely to occur by chance.
    Per document, never cached: the span cache holds what detection alone found in a text.
    """

    def __init__(self, declared: Sequence[tuple[str, str]]) -> None:
        import re

        self._wanted: list[tuple[str, str, bool]] = []  # (entity, text, case-insensitive)
        for entity, value in declared:
            value = value.strip()
            wanted = [(value, True)]
            if entity == "PERSON":
                wanted += [(w, False) for w in re.findall(r"[^\W\d_]{3,}", value) if w != value]
            for text, fold in wanted:
                digits = sum(c.isdigit() for c in text)
                if len(text) < _ECHO_MIN_CHARS or (digits == len(text) and digits < _ECHO_MIN_DIGITS):
                    continue
                if (entity, text, fold) not in self._wanted:
                    self._wanted.append((entity, text, fold))
        self._compiled: dict[tuple[str, bool], re.Pattern[str]] = {}

    def find(self, text: str) -> list[Span]:
        """The declared values in ``text``. A plain substring test first: a pattern is compiled (tens of
        microseconds) only for a value the text may hold, so a request whose strings repeat none pays nothing."""
        import re

        from mlguard.pii.engine import Span

        spans: list[Span] = []
        lowered: str | None = None
        for entity, value, fold in self._wanted:
            if fold:
                if lowered is None:
                    lowered = text.lower()
                if value.lower() not in lowered:
                    continue
            elif value not in text:
                continue
            pattern = self._compiled.get((value, fold))
            if pattern is None:
                pattern = re.compile(rf"(?<!\w){re.escape(value)}(?!\w)", re.IGNORECASE if fold else 0)
                self._compiled[(value, fold)] = pattern
            spans += [Span(entity, m.start(), m.end(), 1.0, ECHO) for m in pattern.finditer(text)]
        return spans


def _rule_parts(rule: Any) -> tuple[str, dict[str, Any]]:
    """Accept a policy EntityRule object, a dict ``{operator, params}`` or a bare operator name."""
    if isinstance(rule, str):
        return rule, {}
    if isinstance(rule, Mapping):
        return str(rule.get("operator", "replace")), dict(rule.get("params") or {})
    return str(getattr(rule, "operator", "replace")), dict(getattr(rule, "params", None) or {})


def _match_rules(rules: Rules, loc: Location) -> str | None:
    """The rule of the route that addresses exactly ``loc`` (first declared wins), if any."""
    for path, rule in rules:
        if len(path.steps) == len(loc) and path.matches(loc):
            return rule
    return None


_MATCHERS: dict[int, tuple[Rules, Callable[[Location], str | None]]] = {}


def _matcher(rules: Rules) -> Callable[[Location], str | None]:
    """``_match_rules`` for one route's rules, as a function of the location.

    Why: the walk asks for every node of every request (about 90 calls for the example's request). When no rule
    has a wildcard, which is the usual route, one dict lookup answers; otherwise the declared order decides, as
    in ``_match_rules``. Built once per rules object (routes keep theirs for the life of the process)."""
    hit = _MATCHERS.get(id(rules))
    if hit is not None and hit[0] is rules:
        return hit[1]
    match: Callable[[Location], str | None]
    if all(step is not None for path, _ in rules for step in path.steps):
        exact: dict[Location, str] = {}
        for path, rule in rules:
            exact.setdefault(path.steps, rule)  # type: ignore[arg-type]  # no wildcard: steps are a location
        match = exact.get
    else:
        def match(loc: Location) -> str | None:
            return _match_rules(rules, loc)
    if len(_MATCHERS) > 1024:  # rules built per call (CLI, tests) must not pile up
        _MATCHERS.clear()
    _MATCHERS[id(rules)] = (rules, match)
    return match


def _segment(part: str) -> str:
    """A member name as it appears inside a formatted path (``.name`` or ``['a name']``)."""
    return format_location((part,))[1:]


def _repath(finding: Finding, paths: Sequence[tuple[str, str]]) -> Finding:
    path = finding.path
    for placeholder, final in paths:
        path = path.replace(placeholder, final)
    return dataclasses.replace(finding, path=path)


def _unscannable(text: str, limit: int) -> str | None:
    if len(text) > limit:
        return "limit:max_field_chars"
    if "\x00" in text:
        return "invalid:nul"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "invalid:surrogate"
    return None
