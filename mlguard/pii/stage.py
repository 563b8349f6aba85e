"""The PII stage: redacts the request before the app sees it, and (by policy) the JSON response after.

before_app: the route's field rules and the policy's operators rewrite ``ex.document`` (copy-on-write via
``ex.set_document``); findings (never values) go to ``ex.findings``; ``MLGuard-Redactions`` counts them; the
engine identity goes to ``ex.record["pii"]`` for the sealed audit record.
after_app: when ``policy.pii.scan_response`` is on, every string of the JSON response is scanned; findings are
recorded with paths prefixed ``response:`` and counted in ``MLGuard-Response-Redactions``.

The scan budget (``pii_engine.max_scan_chars`` / ``max_scan_texts``): a request with more text to scan than that
is refused before any detection: ``before_app`` raises ScanBudgetExceeded, a RequestRejected, which the Exchange
answers as it answers the body limits (413 problem+json, the app not called, no input in the record) instead of
treating it as a stage failure. A response over the budget cannot be refused to the client who sent a small
request: its strings left to scan are withheld (``<REDACTED>``, finding UNSCANNED ``limit:max_scan_...``), as an
over-long string is, and nothing reaches the engine.

The request's subject (``ex.subject``, read by the Exchange from the route's ``subject`` path) is set for the
redaction with ``redacting_for``, so the ``token`` operator links each token it issues or looks up to that
subject in the vault, and ``mlguard audit shred --subject`` erases them with the subject's records.

Why detection runs in a worker thread: NER is CPU work of milliseconds; on the event loop it would stall every
other request. Declared fields and cache hits need no engine and stay inline (sub-millisecond).
Failures raise PIIError (message free of input values); the policy's failure_mode decides what follows, with one
limit: personal data is never passed on in clear. When detection fails the strings it did not scan are withheld
(``<REDACTED>``, finding UNSCANNED) before the stage reports its failure, so fail_open serves a redacted
document; when no redacted document exists at all (the walk or an operator failed) ``ex.unredacted`` makes
``decide()`` refuse the exchange whatever the failure mode.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from mlguard.errors import MLGuardError, PIIError, RequestRejected
from mlguard.pii.declared_paths import DeclaredPathCheck
from mlguard.pii.operators import redacting_for
from mlguard.pii.redactor import SCAN, Budget, Plan, Redactor
from mlguard.stage import BaseStage, BuildContext

if TYPE_CHECKING:
    from mlguard.exchange import Exchange
    from mlguard.pii.engine import PIIEngine
    from mlguard.routes import CompiledRoute

log = logging.getLogger("mlguard.pii.stage")

_KEYED_OPERATORS = ("hmac", "token", "encrypt")


class PIIStage(BaseStage):
    """Built once by :func:`create`; one Redactor per distinct route policy, one engine per process."""

    name = "pii"

    def __init__(self, redactors: dict[int, Redactor], engine: PIIEngine | None, vault: Any = None,
                 declared: DeclaredPathCheck | None = None) -> None:
        self._redactors = redactors
        self._engine = engine
        self._vault = vault
        self._declared = declared

    def describe(self) -> dict[str, Any]:
        return {"engine": self._engine.describe() if self._engine is not None else None}

    def _identity(self) -> dict[str, Any]:
        eng = self._engine
        if eng is None:
            return {"engine": None}
        ident = eng.identity
        return {"engine": {k: ident.get(k) for k in ("model", "version", "sha256", "presidio")}}

    async def before_app(self, ex: Exchange) -> None:
        redactor = self._redactors[ex.route.index]
        if self._declared is not None:
            self._declared.check(ex.route.index, ex.route.path, ex.original)
        try:
            with redacting_for(ex.subject):  # tokens link to this request's subject (erased with it by shred)
                doc, findings = await _redact(redactor, ex.document, ex.route.pii_rules,
                                              ex.route.config.scan_undeclared, "refuse")
        except RequestRejected:
            raise  # over the scan budget: the Exchange refuses the request (nothing scanned, nothing passed on)
        except _Withheld as exc:
            # Detection failed: the strings it did not scan are withheld and the stage still fails, so the policy's
            # failure_mode decides; under fail_open the app gets this document, never the text in clear.
            self._apply(ex, exc.document, exc.findings)
            raise PIIError(str(exc)) from None
        except Exception:
            ex.unredacted = True  # no redacted document exists: refused whatever the failure mode (decide())
            raise
        self._apply(ex, doc, findings)

    def _apply(self, ex: Exchange, doc: Any, findings: list[Any]) -> None:
        if findings:
            ex.set_document(doc)
            ex.findings.extend(findings)
        ex.extra_headers["MLGuard-Redactions"] = str(len(findings))
        ex.record["pii"] = {**self._identity(), "redactions": len(findings)}

    async def after_app(self, ex: Exchange) -> None:
        if not getattr(ex.route.policy.pii, "scan_response", False) or ex.response_doc is None:
            return
        redactor = self._redactors[ex.route.index]
        failed: _Withheld | None = None
        try:
            with redacting_for(ex.subject):
                doc, findings = await _redact(redactor, ex.response_doc, (), True, "withhold")
        except _Withheld as exc:
            failed, doc, findings = exc, exc.document, exc.findings
        except Exception:
            ex.unredacted = True
            raise
        # counted apart from the request's MLGuard-Redactions, so a client can tell its answer was rewritten
        ex.extra_headers["MLGuard-Response-Redactions"] = str(len(findings))
        if failed is None and not findings:
            return
        ex.response_doc = doc
        ex.response_modified = True
        ex.findings.extend(f.__class__(f.entity, "response:" + f.path, f.start, f.end, f.recognizer, f.score,
                                       f.operator) for f in findings)
        section = ex.record.setdefault("pii", self._identity())
        section["response_redactions"] = len(findings)
        if failed is not None:
            raise PIIError(str(failed)) from None

    async def aclose(self) -> None:
        if self._vault is not None:
            self._vault.close()


class _Withheld(PIIError):
    """Detection failed after the walk: ``document`` is redacted, every string the engine did not scan in it
    replaced by ``<REDACTED>`` (findings UNSCANNED, reason ``detection_failed``)."""

    def __init__(self, message: str, document: Any, findings: list[Any]) -> None:
        super().__init__(message)
        self.document = document
        self.findings = findings


async def _redact(redactor: Redactor, doc: Any, rules: Any, scan: bool | None, budget: Budget
                  ) -> tuple[Any, list[Any]]:
    """Redact ``doc``; a detection failure raises _Withheld (a safe document attached), any other PIIError;
    over the scan budget ScanBudgetExceeded (``budget="refuse"``) or the unscanned strings withheld."""
    try:
        plan: Plan = redactor.prepare(doc, rules, scan, budget=budget)
    except Exception as exc:
        raise _pii_error(exc) from None
    if plan.needs_engine:
        try:
            await anyio.to_thread.run_sync(redactor.detect, [plan])
        except Exception as exc:
            redactor.withhold(plan, "detection_failed")
            try:
                document, findings = redactor.finish(plan)
            except Exception as inner:
                raise _pii_error(inner) from None
            raise _Withheld(str(_pii_error(exc)), document, findings) from None
    try:
        return redactor.finish(plan)
    except Exception as exc:
        raise _pii_error(exc) from None


def _pii_error(exc: Exception) -> MLGuardError:
    """Our own errors as they are; a foreign one by its class only (its message may quote the input)."""
    if isinstance(exc, MLGuardError):
        return exc
    return PIIError(f"redaction failed ({type(exc).__name__})")


def _needs_engine(route: CompiledRoute, default_scan: bool) -> bool:
    scan = route.config.scan_undeclared if route.config.scan_undeclared is not None else default_scan
    return scan or any(rule == SCAN for _, rule in route.pii_rules) or bool(
        getattr(route.policy.pii, "scan_response", False))


def create(ctx: BuildContext) -> PIIStage | None:
    """Build the stage for the configured routes; None when no route is guarded."""
    if not ctx.routes:
        return None
    settings = ctx.config.pii_engine
    policies = {id(r.policy): r.policy for r in ctx.routes}
    kinds = {str(getattr(rule, "operator", "")) for p in policies.values() for rule in p.pii.entities.values()}
    kinds |= {str(p.pii.default_operator) for p in policies.values()}
    keyring = None
    if kinds & set(_KEYED_OPERATORS) or ctx.shared.get("keyring") is not None:
        from mlguard.keys import keyring_for

        keyring = keyring_for(ctx)
    vault = None
    if "token" in kinds and keyring is not None:
        from mlguard.pii.vault import Vault

        path = Path(settings.vault_path)
        if not path.is_absolute() and ctx.config.base_dir is not None:
            path = Path(ctx.config.base_dir) / path
        vault = Vault(path, keyring)

    engine: PIIEngine | None = None
    custom: list[dict[str, Any]] = []
    for p in policies.values():
        custom.extend(r.model_dump() for r in p.pii.custom_recognizers)
    if any(_needs_engine(r, settings.scan_undeclared) for r in ctx.routes):
        from mlguard.pii.engine import get_engine

        engine = get_engine(settings, custom)  # at start-up, once: never on a request
        _warn_undetectable(policies.values(), engine)
    by_policy: dict[int, Redactor] = {}
    redactors: dict[int, Redactor] = {}
    for route in ctx.routes:
        red = by_policy.get(id(route.policy))
        if red is None:
            red = Redactor.from_policy(route.policy.pii, settings, keyring=keyring, vault=vault,
                                       engine=engine or (lambda: _late_engine(settings, custom)))
            by_policy[id(route.policy)] = red
        redactors[route.index] = red
    declared = DeclaredPathCheck({r.index: r.pii_rules for r in ctx.routes})
    return PIIStage(redactors, engine, vault, declared)


_COUNTRY_OF = {"UK": "uk", "CA": "ca", "AU": "au", "IN": "in", "SG": "sg", "ZA": "za", "DE": "de", "ES": "es",
               "IT": "it", "PL": "pl", "FI": "fi", "SE": "se", "KR": "kr", "TH": "th", "TR": "tr", "NG": "ng",
               "PH": "ph", "FR": "fr"}


def _warn_undetectable(policies: Iterable[Any], engine: PIIEngine) -> None:
    """Warn at start about entities a policy names that no loaded recognizer finds in text.

    Why: a policy setting ``UK_NINO: drop`` passed every check while the engine, without ``uk`` in
    ``pii_engine.countries``, had nothing that finds a National Insurance number: every one in free text
    reached the model and the record. Declared fields of such an entity are still replaced (no detection is
    needed for them); only scanning misses them. The message names entities and countries, never values."""
    missing: dict[str, list[str]] = {}
    for p in policies:
        for entity in p.pii.entities:
            if entity not in engine.supported:
                missing.setdefault(entity, []).extend(x for x in p.ids if x not in missing.get(entity, []))
    if not missing:
        return
    countries = sorted({_COUNTRY_OF[e.split("_", 1)[0]] for e in missing if e.split("_", 1)[0] in _COUNTRY_OF})
    hint = (f"add {', '.join(countries)} to pii_engine.countries" if countries
            else "add a recognizer under pii_engine.custom_recognizers")
    named = "; ".join(e + " by " + ", ".join(ids) for e, ids in sorted(missing.items()))
    log.warning("no recognizer finds %s in scanned text, though the policies name them (%s): %s; declared "
                "fields of these entities are still replaced whole", ", ".join(sorted(missing)), named, hint)


def _late_engine(settings: Any, custom: list[dict[str, Any]]) -> PIIEngine:
    from mlguard.pii.engine import get_engine

    return get_engine(settings, custom)
