"""Inheritance (``extends``) and composition of several policies into one :class:`EffectivePolicy`.

Pure functions over parsed documents: no file I/O here (``mlguard.policy.load`` reads the files), so the
composition rules can be table-tested.

How it works. Each policy is *flattened* into rules keyed by a dotted field (``failure_mode``,
``retention.min``, ``pii.entities.US_SSN``, ``pii.custom_recognizers.CVV``), each remembering the policy that
declared it (its *origin*). ``extends`` overlays flattened rules: the child's rule replaces the parent's, field
by field and entity by entity, like ruff's ``extend``. Composing policies A, B, C then gathers, per field, the
rules of all of them and

1. drops a rule when another candidate comes from a policy that *extends* its origin: the descendant has
   already decided how to depart from its parent. ``base`` counts as everyone's ancestor, so its engineering
   defaults apply only where no regulation says anything;
2. combines what is left by the field's strategy (:data:`STRATEGIES`): entities union with the stronger operator,
   the longest retention floor, the shortest maximum, fail_closed over fail_open, the smallest ``max_reasons``,
   the strictest fairness thresholds, protective booleans over the others, list unions;
3. reports what cannot be combined as a :class:`Conflict` naming both sources and the resolution (a retention
   maximum below the legal floor is kept to the floor per GDPR Art 17(3)(b)).

Conflicts found while merging the parents of one file (``extends: [a, b]``) travel with the resolved policy
(:attr:`ResolvedPolicy.conflicts`) into every composition that still enforces the value they decided, so they
are reported exactly like conflicts between the deployment's ``policies``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from mlguard.policy.effective import (
    Conflict,
    ConflictValue,
    EffectivePolicy,
    PolicySource,
    SourcedCite,
)
from mlguard.policy.model import (
    OPERATOR_STRENGTH,
    SECTIONS,
    CustomRecognizer,
    EntityRule,
    PolicyDoc,
    parse_duration,
)

__all__ = ["STRATEGIES", "Flat", "ResolvedPolicy", "compose", "effective_view", "flatten", "merge_extends"]

_ENTITIES = "pii.entities."
_RECOGNIZERS = "pii.custom_recognizers."


@dataclass(frozen=True, slots=True)
class Flat:
    """One rule after flattening: a plain value, its citation, and the policy that declared it."""

    value: Any
    cite: str
    verify: bool
    origin: str
    note: str | None = None
    applies_from: date | None = None


@dataclass(frozen=True, slots=True)
class ResolvedPolicy:
    """A policy with its ``extends`` applied: its rules, the files behind them, and its ancestry."""

    doc: PolicyDoc
    source: PolicySource
    rules: Mapping[str, Flat]
    chain: tuple[PolicySource, ...]
    lineage: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Policy id -> ids of its ancestors, for this policy and every ancestor."""
    conflicts: tuple[Conflict, ...] = ()
    """Conflicts resolved while merging the parents of this file or of an ancestor, whose resolution its rules
    still carry. Kept here because :func:`compose` only sees the merged rules: without them a conflict between
    two parents was decided silently, while listing the same parents under ``policies`` reported it."""

    @property
    def id(self) -> str:
        return self.doc.id

    def merged_doc(self) -> PolicyDoc:
        """The document as if written out in full: this file's metadata, every inherited rule filled in."""
        return _unflatten(self.doc, self.rules)


# ------------------------------------------------------------------------------ flatten and inheritance

def flatten(doc: PolicyDoc) -> dict[str, Flat]:
    """Rules of one file, keyed by dotted field, each with ``origin`` = the file's id."""
    out: dict[str, Flat] = {}
    if doc.failure_mode is not None:
        out["failure_mode"] = _flat(doc.failure_mode, doc.id)
    for section_name in SECTIONS:
        section = getattr(doc, section_name)
        for name in type(section).model_fields:
            item = getattr(section, name)
            if name == "entities":
                for e in item:
                    out[_ENTITIES + e.entity] = Flat({"operator": e.operator, "params": dict(e.params)},
                                                     e.cite, e.verify, doc.id, e.note)
            elif name == "custom_recognizers":
                for r in item:
                    value = r.model_dump(mode="json", exclude={"cite", "verify", "note"})
                    out[_RECOGNIZERS + r.name] = Flat(value, r.cite, r.verify, doc.id, r.note)
            elif item is not None:
                out[f"{section_name}.{name}"] = _flat(item, doc.id)
    return out


def _flat(rule: Any, origin: str) -> Flat:
    value = rule.value
    return Flat(list(value) if isinstance(value, list) else value, rule.cite, rule.verify, origin,
                rule.note, rule.applies_from)


def merge_extends(doc: PolicyDoc, source: PolicySource, parents: Sequence[ResolvedPolicy]) -> ResolvedPolicy:
    """Apply ``extends``: the parents combined as a composition combines policies, then the file's own rules.

    The file's own rules override everything it inherits (a descendant overrides its ancestors). Between the
    parents, per rule: one a parent merely inherited from an ancestor that another parent overrides yields to
    that override (``base``'s defaults, which every shipped policy extends, never undo another parent's rule),
    and what is left is decided as in :func:`compose`, the stricter value winning (``fail_closed`` over
    ``fail_open``, ``drop`` over ``mask`` ...). Why: with "later parents override earlier", ``extends: [pci_dss,
    ccpa, gdpr]`` took gdpr's copies of base's defaults over pci_dss's rules (responses not scanned, card
    numbers replaced instead of masked, no audit of reads) and gdpr's ``fail_open``, without a word; a new user's
    payments policy built that way passed full card numbers to clients. Listing the same policies in the
    deployment's ``policies`` composed them correctly; extending them now gives the same values."""
    rules: dict[str, Flat] = {}
    chain: list[PolicySource] = []
    lineage: dict[str, frozenset[str]] = {}
    for parent in parents:
        chain.extend(s for s in parent.chain if s.path not in {c.path for c in chain})
        lineage.update(parent.lineage)

    def ancestors(pid: str) -> frozenset[str]:
        return lineage.get(pid, frozenset())

    keys: list[str] = []  # every rule a parent has, in the parents' order
    for parent in parents:
        keys.extend(k for k in parent.rules if k not in rules and k not in keys)
    conflicts: list[Conflict] = [c for parent in parents for c in parent.conflicts]
    for key in keys:
        cands = _candidates(key, parents, ancestors)
        if len(cands) == 1:
            rules[key] = cands[0]
            continue
        pick = _strategy(key)(key, cands)
        winner = pick.winners[0] if pick.winners else cands[-1]
        rules[key] = winner if winner.value == pick.value else replace(winner, value=pick.value)
        if pick.conflict:
            conflicts.append(pick.conflict)
    rules.update(flatten(doc))
    lineage[doc.id] = frozenset(lineage) | frozenset(p.id for p in parents)
    chain.append(source)
    return ResolvedPolicy(doc=doc, source=source, rules=rules, chain=tuple(chain), lineage=lineage,
                          conflicts=tuple(_still_decided(conflicts, {k: [f.origin] for k, f in rules.items()})))


def _still_decided(conflicts: Sequence[Conflict], origins: Mapping[str, Sequence[str]]) -> list[Conflict]:
    """The conflicts whose resolution is still in force, each once.

    A conflict stops mattering once a policy that took no part in it decides the field: the file's own rule
    (the explicit decision the resolution asks for) or a stricter value of another policy. Each is reported once
    per field and set of policies, because the same conflict reaches a composition through every policy that
    inherited it (and :func:`compose` may meet the same two values again)."""
    out: list[Conflict] = []
    seen: set[tuple[str, frozenset[str]]] = set()
    for c in conflicts:
        sides = frozenset(v.policy for v in c.values)
        mark = (c.field, sides)
        if mark in seen or not sides & set(origins.get(c.field, ())):
            continue
        seen.add(mark)
        out.append(c)
    return out


def _unflatten(doc: PolicyDoc, rules: Mapping[str, Flat]) -> PolicyDoc:
    data: dict[str, Any] = doc.model_dump(mode="json", include={
        "id", "title", "instrument", "jurisdiction", "status", "effective_from", "review_by", "version",
        "extends", "scope", "url", "notes"})
    sections: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for key, flat in rules.items():
        meta: dict[str, Any] = {"cite": flat.cite, "verify": flat.verify}
        if flat.note:
            meta["note"] = flat.note
        if key.startswith(_ENTITIES):
            entity = {"entity": key[len(_ENTITIES):], **flat.value, **meta}
            sections["pii"].setdefault("entities", []).append(entity)
        elif key.startswith(_RECOGNIZERS):
            sections["pii"].setdefault("custom_recognizers", []).append({**flat.value, **meta})
        else:
            rule = {"value": flat.value, **meta}
            if flat.applies_from:
                rule["applies_from"] = flat.applies_from.isoformat()
            if key == "failure_mode":
                data["failure_mode"] = rule
            else:
                section, name = key.split(".", 1)
                sections[section][name] = rule
    data.update({k: v for k, v in sections.items() if v})
    return PolicyDoc.model_validate(data)


# ------------------------------------------------------------------------------------------ strategies

@dataclass(slots=True)
class _Pick:
    value: Any
    winners: list[Flat]
    conflict: Conflict | None = None


Strategy = Callable[[str, list[Flat]], _Pick]


def _rank(order: Sequence[Any]) -> Strategy:
    """The candidate latest in ``order`` wins (order lists weakest first)."""
    def pick(key: str, cands: list[Flat]) -> _Pick:
        best = max(cands, key=lambda c: order.index(c.value)).value
        return _Pick(best, [c for c in cands if c.value == best])
    return pick


def _extreme(fn: Callable[..., Any], sort_key: Callable[[Any], Any] = lambda v: v) -> Strategy:
    def pick(key: str, cands: list[Flat]) -> _Pick:
        best = fn(cands, key=lambda c: sort_key(c.value)).value
        return _Pick(best, [c for c in cands if sort_key(c.value) == sort_key(best)])
    return pick


def _union(key: str, cands: list[Flat]) -> _Pick:
    merged: list[Any] = []
    for c in cands:
        merged.extend(v for v in c.value if v not in merged)
    return _Pick(merged, list(cands))


def _same(key: str, cands: list[Flat]) -> _Pick:
    first = cands[0].value
    winners = [c for c in cands if c.value == first]
    if len(winners) == len(cands):
        return _Pick(first, winners)
    return _Pick(first, winners, Conflict(
        field=key, values=_conflict_values(cands),
        resolution=f"kept the value of {cands[0].origin} (listed first); no rule orders these values, so "
                   "decide explicitly in a policy of your own that extends both"))


def _recognizer(key: str, cands: list[Flat]) -> _Pick:
    """Two definitions of one custom recognizer name: keep what both would find, and report it.

    Why not "the first listed wins": with ``extends: [a, b]`` where ``a`` matches ``CUST-1234`` and ``b``
    ``CUST-1234-AB``, a's weaker pattern replaced b's and left ``-AB`` in clear, without a word. Regexes have no
    order of strength, so the merged recognizer carries every pattern of every definition (the same regex
    once, at its highest score) and the union of the context words; a validator applies only if all
    definitions agree on it, because a validator only removes matches. One recognizer finds one entity, so
    definitions for different entities cannot merge: the first listed is kept. Either way it is a
    :class:`Conflict`, since one of the authors expected a different recognizer."""
    first = cands[0].value
    if all(c.value == first for c in cands):
        return _Pick(first, list(cands))
    values = _conflict_values(cands)
    if len({c.value["entity"] for c in cands}) > 1:
        return _Pick(first, [cands[0]], Conflict(
            field=key, values=values,
            resolution=f"the definitions find different entities; kept that of {cands[0].origin} (listed "
                       "first): rename one of them in a policy of your own that extends both"))
    patterns: list[dict[str, Any]] = []
    for c in cands:
        for pat in c.value["patterns"]:
            same = next((p for p in patterns if p["regex"] == pat["regex"]), None)
            if same is None:
                patterns.append(dict(pat))
            else:
                same["score"] = max(same["score"], pat["score"])
    validators = _unique(c.value["validator"] for c in cands)
    merged = {**first, "patterns": patterns,
              "context": _unique(w for c in cands for w in c.value["context"]),
              "validator": validators[0] if len(validators) == 1 else "none"}
    return _Pick(merged, list(cands), Conflict(
        field=key, values=values,
        resolution=f"kept the patterns and context words of every definition ({', '.join(c.origin for c in cands)}"
                   "), so whatever one of them finds is redacted"
                   + ("; no validator, since they disagree on it" if len(validators) > 1 else "")))


def _entity(key: str, cands: list[Flat]) -> _Pick:
    best_op = max((c.value["operator"] for c in cands), key=OPERATOR_STRENGTH.index)
    winners = [c for c in cands if c.value["operator"] == best_op]
    params = [w.value["params"] for w in winners]
    if all(p == params[0] for p in params):
        return _Pick({"operator": best_op, "params": params[0]}, winners)
    if best_op == "mask":  # keep the fewest characters each side: the stronger mask
        merged = {"keep_first": min(p.get("keep_first", 0) for p in params),
                  "keep_last": min(p.get("keep_last", 0) for p in params)}
        chars = {p["char"] for p in params if "char" in p}
        if len(chars) == 1:
            merged["char"] = chars.pop()
        return _Pick({"operator": "mask", "params": merged}, winners)
    return _Pick({"operator": best_op, "params": params[0]}, [winners[0]], Conflict(
        field=key, values=_conflict_values(winners),
        resolution=f"both ask for {best_op} with different parameters; kept those of {winners[0].origin} "
                   "(listed first)"))


def _duration_key(v: str) -> float:
    return parse_duration(v).sort_key


_ANY_TRUE = _rank([False, True])
_ANY_FALSE = _rank([True, False])

STRATEGIES: dict[str, Strategy] = {
    "failure_mode": _rank(["fail_open", "fail_closed"]),
    "pii.default_operator": _rank(OPERATOR_STRENGTH),
    "pii.scan_response": _ANY_TRUE,
    "pii.protected_to_model": _ANY_FALSE,
    "pii.special_categories_separate": _ANY_TRUE,
    "pii.restricted_zip3": _union,
    "retention.min": _extreme(max, _duration_key),
    "retention.max": _extreme(min, _duration_key),
    "retention.max_required": _ANY_TRUE,
    "retention.erasure_within": _extreme(min, _duration_key),
    "explanations.required": _ANY_TRUE,
    "explanations.reasons_on_adverse": _ANY_TRUE,
    "explanations.max_reasons": _extreme(min),
    "explanations.budget_ms": _extreme(min),
    "explanations.baseline": _same,
    "explanations.prohibited_bases": _union,
    "explanations.insufficient_reason_texts": _union,
    "explanations.counterfactuals": _ANY_TRUE,
    "explanations.notice_within": _extreme(min, _duration_key),
    "fairness.min_impact_ratio": _extreme(max),
    "fairness.max_demographic_parity_difference": _extreme(min),
    "fairness.max_equalized_odds_difference": _extreme(min),
    "fairness.min_group_size": _extreme(min),  # a smaller minimum judges more groups: the stricter check
    "fairness.exclude_below_share": _extreme(min),  # excludes fewer categories
    "fairness.significance_alpha": _extreme(max),  # flags more differences as significant
    # no correction flags the most, Bonferroni the least (Holm's adjusted p-values never exceed Bonferroni's)
    "fairness.significance_correction": _rank(["bonferroni", "holm", "none"]),
    "fairness.action": _rank(["annotate", "alert", "block"]),
    "fairness.report_unknown": _ANY_TRUE,
    "fairness.intersectional": _ANY_TRUE,
    "fairness.audit_max_age": _extreme(min, _duration_key),
    "oversight.stop_control": _ANY_TRUE,
    "oversight.human_review": _ANY_TRUE,
    "oversight.contest": _ANY_TRUE,
    "oversight.log_solely_automated": _ANY_TRUE,
    "audit.required": _ANY_TRUE,
    "audit.encrypt": _ANY_TRUE,
    "audit.record_reads": _ANY_TRUE,
    "audit.tamper_evident": _ANY_TRUE,
}
"""How each field composes. A test checks that every rule field of the schema has an entry."""


def _strategy(key: str) -> Strategy:
    if key.startswith(_ENTITIES):
        return _entity
    if key.startswith(_RECOGNIZERS):
        return _recognizer
    return STRATEGIES[key]


def _conflict_values(cands: Sequence[Flat]) -> list[ConflictValue]:
    return [ConflictValue(policy=c.origin, value=c.value, cite=c.cite) for c in cands]


# ------------------------------------------------------------------------------------------- compose

def compose(policies: Sequence[ResolvedPolicy], *, fallback: ResolvedPolicy | None = None) -> EffectivePolicy:
    """Compose resolved policies (in the deployment's order) into one effective policy.

    ``fallback`` (the bundled ``base``) supplies engineering defaults for fields no policy sets.
    """
    lineage: dict[str, frozenset[str]] = {}
    for p in [*policies, *([fallback] if fallback else [])]:
        lineage.update(p.lineage)
    root = fallback.id if fallback else None

    def ancestors(pid: str) -> frozenset[str]:
        found = lineage.get(pid, frozenset())
        return found | {root} if root and pid != root else found

    layers = [*policies, *([fallback] if fallback else [])]
    keys: list[str] = []
    for p in layers:
        keys.extend(k for k in p.rules if k not in keys)

    values: dict[str, Any] = {}
    origins: dict[str, list[str]] = {}
    citations: dict[str, list[SourcedCite]] = {}
    conflicts: list[Conflict] = []
    used: set[str] = set()
    for key in keys:
        cands = _candidates(key, layers, ancestors)
        pick = _strategy(key)(key, cands)
        values[key] = (pick.value, {c.origin: c for c in pick.winners})
        origins[key] = _unique(c.origin for c in pick.winners)
        citations[key] = [SourcedCite(policy=c.origin, cite=c.cite, verify=c.verify, applies_from=c.applies_from)
                          for c in pick.winners]
        used.update(c.origin for c in cands)
        if pick.conflict:
            conflicts.append(pick.conflict)

    # conflicts met while merging a policy's parents (extends) are reported as the composition's own
    conflicts = _still_decided([*conflicts, *(c for p in layers for c in p.conflicts)], origins)
    conflicts.extend(_retention_floor(values, origins, citations))
    data = _assemble(values)
    missing = ["retention.max"] if data["retention"].get("max_required") and not data["retention"].get("max") \
        else []
    data["retention"]["min_from"] = origins.get("retention.min", [])
    data["retention"]["max_from"] = origins.get("retention.max", [])
    sources: list[PolicySource] = []
    for p in layers:
        for s in p.chain:
            if s.path not in {x.path for x in sources} and (s.id in used or p is not fallback):
                sources.append(s.model_copy(update={"requested": any(s.path == q.source.path
                                                                      for q in policies)}))
    policy = EffectivePolicy.model_validate({
        **data, "ids": [p.id for p in policies], "sources": sources, "conflicts": conflicts,
        "origins": origins, "citations": citations, "missing": missing,
    })
    return policy.model_copy(update={"content_hash": _content_hash(policy)})


def _content_hash(policy: EffectivePolicy) -> str:
    """SHA-256 over the enforced values only (not ids, origins or citations): equal values, equal hash."""
    enforced = policy.model_dump(mode="json", include={"failure_mode", *SECTIONS},
                                 exclude={"retention": {"min_from", "max_from"},
                                          "pii": {"entities": {"__all__": {"cite", "verify", "note"}},
                                                  "custom_recognizers": {"__all__": {"cite", "verify", "note"}}}})
    return hashlib.sha256(json.dumps(enforced, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _candidates(key: str, layers: Sequence[ResolvedPolicy],
                ancestors: Callable[[str], frozenset[str]]) -> list[Flat]:
    """The rules for ``key``, one per declaring policy, minus those a descendant overrode."""
    seen: dict[str, Flat] = {}
    for p in layers:
        flat = p.rules.get(key)
        if flat is not None and flat.origin not in seen:
            seen[flat.origin] = flat
    return [c for c in seen.values()
            if not any(c.origin in ancestors(d.origin) for d in seen.values() if d.origin != c.origin)]


def _retention_floor(values: dict[str, Any], origins: dict[str, list[str]],
                     citations: dict[str, list[SourcedCite]]) -> list[Conflict]:
    """A maximum below the longest legal minimum: keep to the floor (GDPR Art 17(3)(b)) and report it."""
    if "retention.min" not in values or "retention.max" not in values:
        return []
    (floor, floor_by), (cap, cap_by) = values["retention.min"], values["retention.max"]
    if _duration_key(cap) >= _duration_key(floor):
        return []
    conflict = Conflict(
        field="retention.max",
        values=[*_conflict_values(list(cap_by.values())), *_conflict_values(list(floor_by.values()))],
        resolution=(f"the maximum {cap} ({', '.join(cap_by)}) is shorter than the legal minimum {floor} "
                    f"({', '.join(floor_by)}): records are kept for {floor} under the legal-obligation "
                    "exception of GDPR Art 17(3)(b) and crypto-shredded when it ends; erasure requests inside "
                    "the floor are answered with a restriction of processing"),
    )
    values["retention.max"] = (floor, floor_by)
    origins["retention.max"] = list(origins["retention.min"])
    citations["retention.max"] = [*citations["retention.min"],
                                  SourcedCite(policy="mlguard", cite="GDPR Art 17(3)(b) (composition rule)")]
    return [conflict]


def _assemble(values: Mapping[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {s: {} for s in SECTIONS}
    data["pii"]["entities"] = {}
    data["pii"]["custom_recognizers"] = []
    for key, (value, winners) in values.items():
        first = next(iter(winners.values()))
        if key.startswith(_ENTITIES):
            entity = key[len(_ENTITIES):]
            data["pii"]["entities"][entity] = EntityRule(
                entity=entity, operator=value["operator"], params=value["params"],
                cite="; ".join(f"{w.origin}: {w.cite}" for w in winners.values()),
                verify=any(w.verify for w in winners.values()), note=first.note)
        elif key.startswith(_RECOGNIZERS):
            data["pii"]["custom_recognizers"].append(
                CustomRecognizer.model_validate({**value, "cite": first.cite, "verify": first.verify,
                                                 "note": first.note}))
        elif key == "failure_mode":
            data["failure_mode"] = value
        else:
            section, name = key.split(".", 1)
            data[section][name] = value
    return data


def _unique(items: Any) -> list[str]:
    out: list[str] = []
    for i in items:
        if i not in out:
            out.append(i)
    return out


# --------------------------------------------------------------------------------------------- views

def effective_view(policy: EffectivePolicy) -> dict[str, Any]:
    """The effective policy for people: every value with the policies it came from and their citations."""
    def leaf(key: str, value: Any) -> dict[str, Any]:
        cites = policy.cites(key)
        out: dict[str, Any] = {"value": value, "from": policy.origin(key) or ["(not set by any policy)"]}
        if cites:
            out["cite"] = [f"{c.policy}: {c.cite}" + (" (verify)" if c.verify else "")
                           + (f" (applies from {c.applies_from.isoformat()})" if c.applies_from else "")
                           for c in cites]
        return out

    dumped = policy.model_dump(mode="json")
    view: dict[str, Any] = {
        "policies": policy.ids,
        "content_hash": policy.content_hash,
        "sources": dumped["sources"],
        "failure_mode": leaf("failure_mode", policy.failure_mode),
    }
    for section in SECTIONS:
        body: dict[str, Any] = {}
        for name, value in dumped[section].items():
            if name in ("min_from", "max_from"):
                continue
            if name == "entities":
                body[name] = {e: {"operator": r["operator"], "params": r["params"],
                                  "from": policy.origin(_ENTITIES + e), "cite": r["cite"]}
                              for e, r in sorted(value.items())}
            elif name == "custom_recognizers":
                body[name] = [{**r, "from": policy.origin(_RECOGNIZERS + r["name"])} for r in value]
            else:
                body[name] = leaf(f"{section}.{name}", value)
        view[section] = body
    view["conflicts"] = dumped["conflicts"]
    view["missing"] = [f"{m}: required by {', '.join(policy.origin('retention.max_required'))}; set it in "
                       "the deployment or in a policy of your own" for m in policy.missing]
    return view
