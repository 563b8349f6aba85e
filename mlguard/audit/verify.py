"""Verify an audit log without any decryption key.

What is checked, in one streaming pass in seq order:

- sequence numbers run 1, 2, 3, ... with no gap or repeat (deleted, inserted, reordered records);
- each record's chain hash ``H(0x01 || prev || H(0x00 || sealed))`` equals the stored one (edited records,
  swapped contents, torn writes);
- the log reaches its head row, and every checkpoint and witness entry (truncated tails);
- every checkpoint is signed by a known Ed25519 key (``trusted`` keys, if given, else the store's own) and
  matches the recomputed chain head at its seq (a rewritten log, a wrong or replaced signature).

The first failure is reported as an IntegrityError-shaped result: seq, expected and calculated hash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mlguard.audit.chain import GENESIS, checkpoint_valid, link


class RowLike(Protocol):
    @property
    def seq(self) -> int: ...

    @property
    def sealed(self) -> bytes: ...

    @property
    def hash(self) -> bytes: ...


@dataclass(slots=True)
class VerifyResult:
    ok: bool
    records: int = 0
    checkpoints: int = 0
    seq: int | None = None
    problem: str = ""
    expected: str | None = None
    calculated: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "records": self.records, "checkpoints": self.checkpoints, "seq": self.seq,
                "problem": self.problem, "expected": self.expected, "calculated": self.calculated,
                "notes": self.notes}


PROGRESS_EVERY = 1024
"""Records between two progress callbacks (a progress bar's update costs more than hashing one record)."""


def verify_log(rows: Iterable[RowLike], *, head: tuple[int, bytes] | None, checkpoints: list[dict[str, Any]],
               public_keys: dict[str, bytes], trusted: dict[str, bytes] | None = None,
               witness: list[dict[str, Any]] | None = None,
               progress: Callable[[int], None] | None = None) -> VerifyResult:
    keys = trusted if trusted is not None else public_keys
    res = VerifyResult(ok=True)
    by_seq: dict[int, list[dict[str, Any]]] = {}
    all_cps = [(cp, "checkpoint") for cp in checkpoints] + [(cp, "witness") for cp in (witness or [])]
    for cp, where in all_cps:
        try:
            s = int(cp["seq"])
        except (KeyError, TypeError, ValueError):
            return _fail(res, 0, f"malformed {where} entry")
        by_seq.setdefault(s, []).append({**cp, "_where": where})
    res.checkpoints = len(all_cps)
    if not keys and all_cps:
        return _fail(res, min(by_seq), "no public key to check checkpoint signatures")

    calc, expect_seq = GENESIS, 1
    bad = _check_cps(res, by_seq.get(0, ()), 0, calc, keys)
    if bad is not None:
        return bad
    for row in rows:
        if row.seq != expect_seq:
            what = "record missing" if row.seq > expect_seq else "record out of order or inserted"
            return _fail(res, expect_seq, f"{what} (found seq {row.seq} where {expect_seq} was due)",
                         row.hash.hex(), link(calc, row.sealed).hex())
        calc = link(calc, row.sealed)
        if calc != row.hash:
            return _fail(res, row.seq, "record hash mismatch (edited, moved or torn record)",
                         row.hash.hex(), calc.hex())
        res.records += 1
        if row.seq in by_seq:
            bad = _check_cps(res, by_seq[row.seq], row.seq, calc, keys)
            if bad is not None:
                return bad
        if progress is not None and res.records % PROGRESS_EVERY == 0:
            progress(PROGRESS_EVERY)
        expect_seq += 1
    if progress is not None and res.records % PROGRESS_EVERY:
        progress(res.records % PROGRESS_EVERY)
    last = expect_seq - 1
    if head is not None:
        if head[0] > last:
            return _fail(res, last + 1, f"log truncated: head says seq {head[0]}, records end at {last}",
                         head[1].hex(), calc.hex())
        if head[0] == last and head[1] != calc:
            return _fail(res, last, "head hash mismatch", head[1].hex(), calc.hex())
    beyond = [s for s in by_seq if s > last]
    if beyond:
        cp = by_seq[max(beyond)][0]
        return _fail(res, last + 1, f"log truncated: a {cp['_where']} covers seq {max(beyond)}, "
                                    f"records end at {last}", str(cp.get("head")), calc.hex())
    if last > max(by_seq, default=0):
        res.notes.append(f"records after the last checkpoint ({last - max(by_seq, default=0)}) are chained "
                         "but not yet signed")
    return res


def _check_cps(res: VerifyResult, cps: Iterable[dict[str, Any]], seq: int, calc: bytes,
               keys: dict[str, bytes]) -> VerifyResult | None:
    for cp in cps:
        if not checkpoint_valid({k: v for k, v in cp.items() if k != "_where"}, keys):
            return _fail(res, seq, f"{cp['_where']} signature invalid or by an unknown key ({cp.get('kid')})",
                         str(cp.get("head")), calc.hex())
        if cp.get("head") != calc.hex():
            return _fail(res, seq, f"{cp['_where']} head differs from the recomputed chain",
                         str(cp.get("head")), calc.hex())
    return None


def _fail(res: VerifyResult, seq: int, problem: str, expected: str | None = None,
          calculated: str | None = None) -> VerifyResult:
    res.ok = False
    res.seq = seq
    res.problem = problem
    res.expected = expected
    res.calculated = calculated
    return res


def verify_store(url: str, *, witness: list[dict[str, Any]] | None = None,
                 trusted: dict[str, bytes] | None = None,
                 progress: Callable[[int], None] | None = None) -> VerifyResult:
    """Open the store at ``url`` and verify it end to end (no decryption key); the store is closed after."""
    from mlguard.audit.store.base import open_store

    store = open_store(url, create=False)
    try:
        head = store.head()
        return verify_log(store.iter_chain(), head=head, checkpoints=store.checkpoints(),
                          public_keys=store.public_keys(), trusted=trusted, witness=witness, progress=progress)
    finally:
        store.close()
