"""The live fairness window: per-group counts over the last N decisions and/or the last T seconds.

Why counts and not rows: every fairness metric mlguard reports (selection rates, TPR/FPR/FNR, parity and odds
differences and ratios, LL144 impact ratios) is a function of per-group confusion counts. Keeping those counts
current costs O(1) per decision (add the new one, subtract the one that falls out of the window), so computing all
metrics costs O(groups), not O(window). Only the LL144 scoring-rate variant needs the scores themselves (a median
of the whole sample), so the ring keeps them and that one is computed on demand.

Groups: one per value of each protected attribute ("sex=Female") and, when intersectional, one per combination
("sex=Female|race=Black"). A value that is missing or of an unexpected type, or says the person did not state one
(``unknown_values``: "Prefer not to say", ...), counts as "unknown" (LL144 asks for the size of the unknown
category); a declared attribute's value that is none of its ``categories`` counts as "other" (matching ignores
case and surrounding whitespace, so "female" and "F " are not "other" next to "Female" and "F"); a value beyond
``max_categories`` distinct ones per attribute counts as "other", so hostile input cannot grow memory without
bound. Nothing here logs or raises with a value.

Names: group names are shown in clear in metrics labels, the admin endpoint, reports and alerts, so a value
only becomes a name when the deployment declared it (``categories``). With a ``label_key`` (the stage always
passes one), a value of an attribute without declared categories is named by a keyed digest instead
("sex=~3f09c1a2d4"): groups stay apart and stable across workers and restarts, and free text a client puts in a
protected field (a name, an email address) never appears in clear. Without a key (unit use), values are kept as
they come.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlguard.config.fairness import DEFAULT_UNKNOWN_VALUES, fold_category

UNKNOWN = "unknown"
OTHER = "other"
MAX_VALUE_CHARS = 64


class GroupCounts:
    """Running confusion counts of one group. ``labelled`` rows are those whose ground truth has arrived."""

    __slots__ = ("dimension", "fn", "fp", "key", "labelled", "n", "selected", "tn", "tp", "unknown")

    def __init__(self, key: str, dimension: str, unknown: bool) -> None:
        self.key = key
        self.dimension = dimension
        self.unknown = unknown
        self.n = 0
        self.selected = 0
        self.labelled = 0
        self.tp = 0
        self.fp = 0
        self.tn = 0
        self.fn = 0

    def as_tuple(self) -> tuple[int, int, int, int, int, int, int]:
        return (self.n, self.selected, self.labelled, self.tp, self.fp, self.tn, self.fn)

    def add_label(self, pred: bool, label: bool, sign: int) -> None:
        self.labelled += sign
        if pred:
            if label:
                self.tp += sign
            else:
                self.fp += sign
        elif label:
            self.fn += sign
        else:
            self.tn += sign


class Slot:
    """One decision in the ring. Holds references to its groups' counts, so eviction needs no lookup."""

    __slots__ = ("audit_id", "groups", "label", "live", "pred", "score", "ts")

    def __init__(self, groups: tuple[GroupCounts, ...], pred: bool, score: float | None, ts: float,
                 audit_id: str | None) -> None:
        self.groups = groups
        self.pred = pred
        self.score = score
        self.label: bool | None = None
        self.ts = ts
        self.audit_id = audit_id
        self.live = True


@dataclass(frozen=True, slots=True)
class GroupSnapshot:
    """Counts of one group at one moment (plain values, safe to hand to metrics and reports)."""

    key: str
    dimension: str
    unknown: bool
    n: int
    selected: int
    labelled: int = 0
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0
    above_median: int | None = None  # LL144 scoring rate numerator, when scores were asked for
    scored: int = 0  # decisions of the group that carried a score


def digest_label(key: bytes, attribute: str, value: str) -> str:
    """The name a value of an undeclared attribute is shown by: a keyed digest, never the value."""
    mac = hmac.new(key, attribute.encode() + b"\0" + value.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return "~" + mac.hexdigest()[:10]


def dimensions_for(attributes: Sequence[str], intersectional: bool) -> list[str]:
    """The dimensions metrics are computed over: each attribute, then their intersection (when > 1)."""
    dims = list(attributes)
    if intersectional and len(attributes) > 1:
        dims.append("|".join(attributes))
    return dims


class FairnessWindow:
    """Sliding window of decisions with per-group running counts.

    Parameters
    ----------
    attributes : sequence of str
        Protected attribute names, in a fixed order (the order intersectional keys are written in).
    size : int
        Keep at most the last ``size`` decisions.
    seconds : float or None
        Also drop decisions older than ``seconds``.
    intersectional : bool
        Also count the combination of all attributes.
    max_categories : int
        Distinct values kept per attribute; later new values count as "other".
    categories : mapping of str to collection of str, optional
        Allowed values per attribute: any other value counts as "other" (a closed list keeps free text sent in a
        protected field out of group names, which reports and metrics show in clear). Matched ignoring case and
        surrounding whitespace; a match is named as listed here.
    unknown_values : collection of str, optional
        Values that count as "unknown" (matched the same way), of any attribute; None: the default list
        (``mlguard.config.fairness.DEFAULT_UNKNOWN_VALUES``). A value also declared in ``categories`` counts as
        that category.
    label_key : bytes, optional
        Name the values of attributes without ``categories`` by a keyed digest ("~" and 10 hex digits) instead
        of the value itself (see the module docstring).

    Examples
    --------
    >>> w = FairnessWindow(["sex"], size=3)
    >>> w.add({"sex": "F"}, True), w.add({"sex": 7.5}, False)
    (('sex=F',), ('sex=unknown',))
    >>> sorted((g.key, g.n, g.selected) for g in w.snapshot())
    [('sex=F', 1, 1), ('sex=unknown', 1, 0)]
    """

    def __init__(self, attributes: Sequence[str], *, size: int, seconds: float | None = None,
                 intersectional: bool = True, max_categories: int = 50,
                 categories: Mapping[str, Collection[str]] | None = None, label_key: bytes | None = None,
                 unknown_values: Collection[str] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.attributes = tuple(attributes)
        self.label_key = label_key
        self.allowed = {a: {fold_category(x): x.strip() for x in v} for a, v in (categories or {}).items()}
        self.unknown_values = frozenset(fold_category(x) for x in
                                        (DEFAULT_UNKNOWN_VALUES if unknown_values is None else unknown_values))
        self.size = size
        self.seconds = seconds
        self.intersectional = intersectional and len(self.attributes) > 1
        self.max_categories = max_categories
        self.clock = clock
        self.dimensions = dimensions_for(self.attributes, intersectional)
        self._ring: deque[Slot] = deque()
        self._groups: dict[str, GroupCounts] = {}
        self._values: dict[str, dict[object, str]] = {a: {} for a in self.attributes}
        self._by_id: dict[str, Slot] = {}
        self.total = 0

    # ------------------------------------------------------------------ groups

    def _category(self, attribute: str, value: Any) -> str:
        """The category a raw value counts in; never raises, whatever the value.

        Declared values and ``unknown_values`` are matched ignoring case and surrounding whitespace
        (:func:`~mlguard.config.fairness.fold_category`); a declared match is named as declared. Only declared
        matches are remembered for a declared attribute (by folded text, so spellings of one value take one
        entry): values that match nothing are not, so hostile values cannot grow the map."""
        if isinstance(value, bool) or not isinstance(value, str | int):
            return UNKNOWN
        known = self._values[attribute]
        allowed = self.allowed.get(attribute)
        if allowed is None:
            cat = known.get(value)
            if cat is not None:
                return cat
        text = value.strip() if isinstance(value, str) else str(value)
        if not text or len(text) > MAX_VALUE_CHARS or "|" in text or "=" in text:
            return UNKNOWN
        folded = fold_category(text)
        if folded == UNKNOWN:
            return UNKNOWN
        if allowed is not None:
            cat = known.get(folded)
            if cat is not None:
                return cat
            declared = allowed.get(folded)
            if declared is None:
                return UNKNOWN if folded in self.unknown_values else OTHER
            if len(known) >= self.max_categories:
                return OTHER
            known[folded] = declared
            return declared
        if folded in self.unknown_values:
            return UNKNOWN  # not remembered either: the set is fixed
        if len(known) >= self.max_categories:
            return OTHER
        cat = digest_label(self.label_key, attribute, text) if self.label_key is not None else text
        known[value] = cat
        return cat

    def group_keys(self, protected: Mapping[str, Any]) -> tuple[str, ...]:
        """Group keys of one decision: one per attribute, then the intersection (when intersectional)."""
        parts = [f"{a}={self._category(a, protected.get(a))}" for a in self.attributes]
        if self.intersectional:
            parts.append("|".join(parts))
        return tuple(parts)

    def _group(self, key: str, dimension: str) -> GroupCounts:
        g = self._groups.get(key)
        if g is None:
            unknown = any(p.endswith("=" + UNKNOWN) for p in key.split("|"))
            g = self._groups[key] = GroupCounts(key, dimension, unknown)
        return g

    # ------------------------------------------------------------------ updates

    def add(self, protected: Mapping[str, Any], pred: bool, score: float | None = None,
            audit_id: str | None = None, now: float | None = None) -> tuple[str, ...]:
        """Count one decision; evict what falls out of the window. O(number of groups per decision)."""
        ts = self.clock() if now is None else now
        self._evict(ts)
        keys = self.group_keys(protected)
        groups = tuple(self._group(k, d) for k, d in zip(keys, self.dimensions, strict=True))
        for g in groups:
            g.n += 1
            if pred:
                g.selected += 1
        slot = Slot(groups, pred, score, ts, audit_id)
        self._ring.append(slot)
        self.total += 1
        if audit_id is not None:
            self._by_id[audit_id] = slot
        if len(self._ring) > self.size:
            self._drop(self._ring.popleft())
        return keys

    def set_label(self, audit_id: str, label: bool) -> bool:
        """Join ground truth to a decision still in the window; False when it is unknown or evicted."""
        slot = self._by_id.get(audit_id)
        if slot is None or not slot.live:
            return False
        if slot.label is not None:
            for g in slot.groups:
                g.add_label(slot.pred, slot.label, -1)
        slot.label = label
        for g in slot.groups:
            g.add_label(slot.pred, label, +1)
        return True

    def knows(self, audit_id: str) -> bool:
        return audit_id in self._by_id

    def forget(self, audit_id: str) -> bool:
        """Take one decision out of the window, counts and label included, as if it had never been counted;
        False when it is not (or no longer) in the window.

        Why: a decision whose subject was erased (``mlguard audit shred``) must stop feeding the metrics with
        that person's protected groups at once, not only when it ages out of the window. O(window) for the
        ring removal: erasures are rare."""
        slot = self._by_id.get(audit_id)
        if slot is None or not slot.live:
            return False
        self._ring.remove(slot)
        self._drop(slot)
        return True

    def _evict(self, now: float) -> None:
        if self.seconds is None:
            return
        horizon = now - self.seconds
        ring = self._ring
        while ring and ring[0].ts <= horizon:
            self._drop(ring.popleft())

    def _drop(self, slot: Slot) -> None:
        slot.live = False
        for g in slot.groups:
            g.n -= 1
            if slot.pred:
                g.selected -= 1
            if slot.label is not None:
                g.add_label(slot.pred, slot.label, -1)
        if slot.audit_id is not None:
            self._by_id.pop(slot.audit_id, None)

    def clear(self) -> None:
        """Forget every decision (after a human resumes a corrected system, on request)."""
        for slot in self._ring:
            slot.live = False
        self._ring.clear()
        self._by_id.clear()
        self._groups.clear()

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return len(self._ring)

    def __iter__(self) -> Iterator[Slot]:
        return iter(self._ring)

    def snapshot(self, *, scores: bool = False, now: float | None = None) -> list[GroupSnapshot]:
        """Counts of every group with at least one decision in the window.

        With ``scores=True`` each group also gets ``above_median``: how many of its decisions scored above the
        median score of the whole window (LL144's scoring rate), an O(window) computation done only on demand.
        """
        if now is not None:
            self._evict(now)
        above: dict[str, int] = {}
        scored: dict[str, int] = {}
        if scores:
            values = [s.score for s in self._ring if s.score is not None]
            if values:
                median = _median(values)
                for s in self._ring:
                    if s.score is None:
                        continue
                    for g in s.groups:
                        scored[g.key] = scored.get(g.key, 0) + 1
                        if s.score > median:
                            above[g.key] = above.get(g.key, 0) + 1
        return [GroupSnapshot(g.key, g.dimension, g.unknown, *g.as_tuple(),
                              above_median=(above.get(g.key, 0) if scores else None),
                              scored=scored.get(g.key, 0))
                for g in self._groups.values() if g.n > 0]


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2.0


__all__ = ["OTHER", "UNKNOWN", "FairnessWindow", "GroupCounts", "GroupSnapshot", "Slot", "digest_label",
           "dimensions_for"]
