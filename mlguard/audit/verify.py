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

import contextlib
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from mlguard.audit import parallel
from mlguard.audit.chain import GENESIS, LEAF_STATE, NODE, checkpoint_valid, leaf_hash, node


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
    checkpoints: int = 0  # the store's (or bundle's) signed checkpoints
    witness_entries: int = 0  # the witness file's entries: counted apart, they are mostly the same checkpoints
    seq: int | None = None
    problem: str = ""
    expected: str | None = None
    calculated: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "records": self.records, "checkpoints": self.checkpoints,
                "witness_entries": self.witness_entries, "seq": self.seq,
                "problem": self.problem, "expected": self.expected, "calculated": self.calculated,
                "notes": self.notes}


PROGRESS_EVERY = 1024
"""Records between two progress callbacks (a progress bar's update costs more than hashing one record)."""


LeafRow = tuple[int, bytes, bytes]
"""(seq, leaf hash of the sealed bytes, stored chain hash): all the chain walk needs of a record."""


def leaf_rows(rows: Iterable[RowLike]) -> Iterator[LeafRow]:
    for row in rows:
        yield row.seq, leaf_hash(row.sealed), row.hash


def verify_log(rows: Iterable[RowLike], *, head: tuple[int, bytes] | None, checkpoints: list[dict[str, Any]],
               public_keys: dict[str, bytes], trusted: dict[str, bytes] | None = None,
               witness: list[dict[str, Any]] | None = None,
               progress: Callable[[int], None] | None = None) -> VerifyResult:
    """Verify records given in seq order (a store's ``iter_chain``, a bundle's rows) in this process."""
    return verify_leaves(leaf_rows(rows), head=head, checkpoints=checkpoints, public_keys=public_keys,
                         trusted=trusted, witness=witness, progress=progress)


@dataclass(frozen=True, slots=True)
class Span:
    """``count`` records from seq ``first`` that a worker walked from ``prev`` (the stored chain hash before
    ``first``) and found whole: contiguous seqs, each stored hash equal to the chain hash over its
    predecessor's. The walk accepts it when ``prev`` is its own chain hash there, which makes every stored hash
    in the span the chain hash by induction: what walking the records one by one would have found."""

    first: int
    count: int
    prev: bytes
    last_hash: bytes
    hashes: dict[int, bytes]  # stored (= chain) hashes at the checkpoints' seqs inside the span


def verify_leaves(rows: Iterable[LeafRow | Span], *, head: tuple[int, bytes] | None, checkpoints: list[dict[str, Any]],
                  public_keys: dict[str, bytes], trusted: dict[str, bytes] | None = None,
                  witness: list[dict[str, Any]] | None = None,
                  progress: Callable[[int], None] | None = None) -> VerifyResult:
    """The chain walk over (seq, leaf, stored hash) in seq order, or over spans other processes walked
    (``verify_store``): every verdict and its seq are the same either way."""
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
    res.checkpoints, res.witness_entries = len(checkpoints), len(witness or [])
    if not keys and all_cps:
        return _fail(res, min(by_seq), "no public key to check checkpoint signatures")

    calc, expect_seq = GENESIS, 1
    bad = _check_cps(res, by_seq.get(0, ()), 0, calc, keys)
    if bad is not None:
        return bad
    for item in rows:
        if isinstance(item, Span):  # a window another process walked from its stored predecessor: all held
            if item.first != expect_seq or item.prev != calc:  # cannot happen unless the log moved meanwhile
                return _fail(res, expect_seq, "log changed while it was being verified; verify again",
                             item.prev.hex(), calc.hex())
            for seq in sorted(s for s in item.hashes if s in by_seq):
                bad = _check_cps(res, by_seq[seq], seq, item.hashes[seq], keys)
                if bad is not None:
                    res.records += seq - item.first + 1
                    return bad
            calc, expect_seq = item.last_hash, item.first + item.count
            before = res.records
            res.records += item.count
            if progress is not None and res.records // PROGRESS_EVERY > before // PROGRESS_EVERY:
                progress((res.records // PROGRESS_EVERY - before // PROGRESS_EVERY) * PROGRESS_EVERY)
            continue
        seq, leaf, stored = item
        if seq != expect_seq:
            what = "record missing" if seq > expect_seq else "record out of order or inserted"
            return _fail(res, expect_seq, f"{what} (found seq {seq} where {expect_seq} was due)",
                         stored.hex(), node(calc, leaf).hex())
        calc = node(calc, leaf)
        if calc != stored:
            return _fail(res, seq, "record hash mismatch (edited, moved or torn record)", stored.hex(), calc.hex())
        res.records += 1
        if seq in by_seq:
            bad = _check_cps(res, by_seq[seq], seq, calc, keys)
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
            why = ("signature invalid" if cp.get("kid") in keys else
                   f"signed by key {cp.get('kid')}, which is not among the trusted public keys (after a "
                   "`mlguard keys rotate`, pin the new signing key too: --pubkey may be given more than once)")
            return _fail(res, seq, f"{cp['_where']} {why}", str(cp.get("head")), calc.hex())
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
                 trusted: dict[str, bytes] | None = None, progress: Callable[[int], None] | None = None,
                 jobs: int | None = None, window: int = parallel.WINDOW) -> VerifyResult:
    """Open the store at ``url`` and verify it end to end (no decryption key); the store is closed after.

    ``jobs`` worker processes (default: one per core) read the log in seq windows and hash its records'
    leaves; this process walks the chain over their results in order (one short hash per record), so the
    verdict is the one a single process reaches (tests/audit/test_parallel.py compares them)."""
    from mlguard.audit.store.base import open_store

    store = open_store(url, create=False)
    try:
        head = store.head()
        checkpoints, public_keys = store.checkpoints(), store.public_keys()
    finally:
        store.close()
    cp_seqs = set()
    for cp in [*checkpoints, *(witness or [])]:
        with contextlib.suppress(KeyError, TypeError, ValueError):  # the walk reports malformed entries
            cp_seqs.add(int(cp["seq"]))
    results = parallel.run_windows(_walk_window, parallel.windows(head[0], window), url=url,
                                   jobs=parallel.default_jobs() if jobs is None else jobs,
                                   state={"cp_seqs": cp_seqs})
    try:
        return verify_leaves((row for part in results for row in part), head=head, checkpoints=checkpoints,
                             public_keys=public_keys, trusted=trusted, witness=witness, progress=progress)
    finally:
        results.close()  # a failure found early: stop the workers now, not when the generator is collected


def _walk_window(window: tuple[int, int | None]) -> list[LeafRow] | list[Span]:
    """Read and walk one window in a worker: a Span when it is whole, else its rows (seq, leaf, stored hash)
    so the parent's walk finds and reports the failure exactly as one process would."""
    after, upto = window
    store = parallel.worker_store()
    if after == 0:
        prev: bytes | None = GENESIS
    else:
        before = next(iter(store.iter_chain(since_seq=after - 1, to_seq=after)), None)
        prev = None if before is None else before.hash
    if prev is not None:
        cp_seqs = parallel.state()["cp_seqs"]
        hashes: dict[int, bytes] = {}
        calc, expect = prev, after + 1
        leaf_state, sha256 = LEAF_STATE.copy, hashlib.sha256  # the hot loop: node(calc, leaf_hash(.)) inlined
        for seq, sealed, stored in store.iter_chain(since_seq=after, to_seq=upto):
            leaf = leaf_state()
            leaf.update(sealed)
            if seq != expect or sha256(NODE + calc + leaf.digest()).digest() != stored:
                break
            if seq in cp_seqs:
                hashes[seq] = stored
            calc, expect = stored, expect + 1
        else:
            return [Span(after + 1, expect - after - 1, prev, calc, hashes)] if expect > after + 1 else []
    # not whole (or its predecessor is missing): hand over the rows, read again, for the exact report
    return list(leaf_rows(store.iter_chain(since_seq=after, to_seq=upto)))
