"""Verify an audit log without any decryption key.

What is checked, in this order (the first failure is reported):

- every checkpoint entry names a sequence number;
- every checkpoint is signed by a trusted Ed25519 key: the pinned ``trusted`` keys if given, else the keys the
  store (or bundle) carries, which proves the log consistent with itself, not who wrote it (a forger re-signs
  with a key of his own and ships it along). The log's own checkpoints are checked before the witness's, and
  signatures before anything they vouch for: a log signed by a key nobody trusts is reported as that, not as a
  witness that disagrees with it;
- a witness, when given, holds at least one entry if the log has checkpoints (an empty one vouches for nothing);

then, in one streaming pass in seq order:

- sequence numbers run 1, 2, 3, ... with no gap or repeat (deleted, inserted, reordered records);
- each record's chain hash ``H(0x01 || prev || H(0x00 || sealed))`` equals the stored one (edited records,
  swapped contents, torn writes);
- each record's clear columns (audit id, ts, kind, route, subject: what ``export`` filters on) equal the values
  in its sealed header, which the chain covers and the columns are not (a record moved to another subject, day
  or route by editing its row);
- every checkpoint and witness entry matches the recomputed chain head at its seq, and the log reaches its head
  row and every checkpoint and witness entry (a rewritten log, truncated tails);
- a row source that cannot go on (a bundle file torn in the middle of a line, a damaged line: ``RowsEnded``) is
  reported after the last record it gave, at the seq that follows;
- with pinned keys, at least one checkpoint or witness entry covers a record (``_unattested``).

The first failure is reported as an IntegrityError-shaped result: seq, expected and calculated (hashes, or for a
signature or a column, what was required and what was found; never a column's value).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from mlguard.audit import parallel
from mlguard.audit.chain import GENESIS, LEAF_STATE, NODE, checkpoint_valid, leaf_hash, node
from mlguard.audit.seal import VERSION, decode
from mlguard.audit.store.base import RecordRow, VerifyRow
from mlguard.errors import IntegrityError


class RowsEnded(IntegrityError):
    """Raised by a row source that cannot give its next row (a bundle's line torn off or damaged): the walk
    reports it at the seq after the last record it had (``verify_leaves``), so the report says where the readable
    log stops. ``line``: 1-based line of the file; ``why``: what is wrong with it (never its content); ``torn``:
    the file's last line, cut off (nothing follows it)."""

    def __init__(self, line: int, why: str, *, torn: bool) -> None:
        self.line = line
        self.why = why
        self.torn = torn
        super().__init__(f"line {line}: {why}")


Source = Literal["bundle", "store", "log"]
"""Where the rows come from, for the words of a report (who could have cut or rewritten an unattested log)."""


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


Failure = tuple[str, str, str]
"""(problem, expected, calculated) of a failure found before the walk reports it at its seq."""

LeafRow = tuple[int, bytes, bytes, Failure | None]
"""(seq, leaf hash of the sealed bytes, stored chain hash, what is wrong with its clear columns if anything): all
the chain walk needs of a record."""


def leaf_rows(rows: Iterable[RowLike]) -> Iterator[LeafRow]:
    """The walk's view of records. A store's RecordRows (``iter_rows``) have their clear columns checked against
    the sealed header; a bundle's rows and ``iter_chain``'s carry none (a bundle's reader takes those values from
    the sealed header itself, so there is nothing to misdirect)."""
    for row in rows:
        problem = None
        if isinstance(row, RecordRow):
            problem = column_problem(row.seq, row.sealed, row.audit_id, row.ts, row.kind, row.route, row.subject)
        yield row.seq, leaf_hash(row.sealed), row.hash, problem


def checked_leaf_rows(rows: Iterable[VerifyRow]) -> Iterator[LeafRow]:
    """``leaf_rows`` over a store's ``iter_verify`` rows: every record's columns checked."""
    for seq, sealed, stored, audit_id, ts, kind, route, subject in rows:
        yield seq, leaf_hash(sealed), stored, column_problem(seq, sealed, audit_id, ts, kind, route, subject)


_V_END = f',"v":{VERSION}}}'
_Q = '"'
_BACKSLASH = 92
"""``92 in text``: a tenth of the time ``b"\\\\" in text`` takes (which goes through the buffer protocol)."""
_COLUMNS = (("audit_id", "id"), ("ts", "ts"), ("kind", "kind"), ("route", "route"), ("subject", "subj"))
"""The store's clear columns and the sealed header's keys that hold the same values (reader._check_columns)."""


def columns_match(seq: int, sealed: bytes, audit_id: str, ts: str, kind: str, route: str | None,
                  subject: str | None) -> bool:
    """Whether the sealed header holds exactly these column values, decided on the bytes. True only when the
    header is the writer's canonical text (seal._header_q over record.Pending.header_parts) of these values with no
    escaped character; False otherwise, and ``column_problem`` then parses the header.

    Why on the bytes: every record's header is checked, and verify's target is 200,000 records/s (about 4 us a
    record in one process). Parsing the header and comparing five values cost 1.4 us a record here; writing the
    columns into the header's text and comparing it in place, 0.6 us (JSON-escaping the values as the writer does
    would add 0.25 us: hence the backslash test instead). The layout is fixed: ``{"id":ID,"kid":KID,"kind":KIND,
    "pkid":PKID,"prev":"<64 hex>","route":ROUTE,"seq":N,"subj":SUBJ,"ts":TS,"v":1}``, KID and PKID a data key id
    (32 hex digits, quoted) or null.

    Why equal bytes are equal values: a text such as ``","kid":`` can stand in valid JSON only where the key kid
    follows a string value (its second quote follows a comma, so it opens a string: the comma is outside every
    string), and the header has one kid. The compared text ends the id with that same text, so equal bytes put
    the id's end at the same offset: the header's id is written as the column's text. And the compared texts
    hold no backslash, so that text is the value itself, not an escape of another one (a column holding the
    header's ``a\\"b`` for its ``a"b``). Likewise for kind (``","pkid":``), route (``,"seq":``), subject
    (``,"ts":"``) and ts (``","v":``); null is told from a string by its first byte. A header the writer did not
    write in that form (an escaped value, another key id format, a later version) fails here and is parsed.
    """
    try:
        head = f'{{"id":"{audit_id}","kid":'.encode()
        at = 8 + len(head)  # MAGIC and the header's length, then the text above
        if sealed[8:at] != head or _BACKSLASH in head:  # (slices compared: cheaper than startswith's arguments)
            return False
        at += 34 if sealed[at] == 34 else 4  # KID: a quoted 32-digit key id, or null (a clear record)
        mid = _KINDS.get(kind)
        if mid is None:
            mid = f',"kind":"{kind}","pkid":'.encode()
            if _BACKSLASH in mid:
                return False
            if len(_KINDS) < 64:  # a handful of kinds; edited columns of any number cannot grow it
                _KINDS[kind] = mid
        end = at + len(mid)
        if sealed[at:end] != mid:
            return False
        at = end + (108 if sealed[end] == 34 else 78)  # PKID (34 or 4 bytes), then ,"prev":"<64 hex>" (74)
        if route is not None and subject is not None:  # the common case, without the two choices below
            tail = f',"route":"{route}","seq":{seq},"subj":"{subject}","ts":"{ts}"{_V_END}'.encode()
        else:
            tail = (f',"route":{"null" if route is None else _Q + route + _Q},"seq":{seq},'
                    f'"subj":{"null" if subject is None else _Q + subject + _Q},"ts":"{ts}"{_V_END}').encode()
        return sealed[at:at + len(tail)] == tail and _BACKSLASH not in tail
    except (IndexError, TypeError, UnicodeEncodeError):  # a short blob, a column of another type: parse it
        return False


_KINDS: dict[str, bytes] = {}
"""kind -> its header text (``,"kind":"K","pkid":``): kinds are few, and the text is the same for every record."""


def column_problem(seq: int, sealed: bytes, audit_id: str, ts: str, kind: str, route: str | None,
                   subject: str | None) -> Failure | None:
    """What is wrong with a record's clear columns: None when they hold its sealed header's values (the
    comparison export makes when it reads the record, reader._check_columns), else the failure, naming the
    columns that differ and never their values."""
    if columns_match(seq, sealed, audit_id, ts, kind, route, subject):
        return None
    try:
        header = decode(sealed).header
    except IntegrityError:
        return ("sealed record is malformed: its header cannot be read to check the store's columns",
                "a readable sealed header", "none")
    values = (audit_id, ts, kind, route, subject)
    differ = [column for (column, key), value in zip(_COLUMNS, values, strict=True) if header.get(key) != value]
    if not differ:
        return None
    names = ", ".join(differ)
    keys = ", ".join(dict(_COLUMNS)[c] for c in differ)
    many = len(differ) > 1
    return (f"store column{'s' if many else ''} {names} differ{'' if many else 's'} from the record's sealed header "
            "(edited in the store: export's --since/--until/--route/--subject select records by these columns)",
            f"the sealed header's {keys}", f"{'columns' if many else 'column'} {names}: another value")


def verify_log(rows: Iterable[RowLike], *, head: tuple[int, bytes] | None, checkpoints: list[dict[str, Any]],
               public_keys: dict[str, bytes], trusted: dict[str, bytes] | None = None,
               witness: list[dict[str, Any]] | None = None,
               progress: Callable[[int], None] | None = None, source: Source = "log") -> VerifyResult:
    """Verify records given in seq order (a store's ``iter_chain``, a bundle's rows) in this process."""
    return verify_leaves(leaf_rows(rows), head=head, checkpoints=checkpoints, public_keys=public_keys,
                         trusted=trusted, witness=witness, progress=progress, source=source)


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
                  progress: Callable[[int], None] | None = None, source: Source = "log") -> VerifyResult:
    """The checks of the module docstring over (seq, leaf, stored hash, column failure) in seq order, or over
    spans other processes walked (``verify_store``): every verdict and its seq are the same either way.

    ``public_keys``: the keys the log carries (key id -> raw Ed25519 public key). ``trusted``: keys pinned by
    whoever verifies, trusted whatever the log carries (a label -> raw public key; the label is the log's key id
    where it has one); None trusts ``public_keys``. ``source``: what the rows are, for the words of a report."""
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
    signers = _Signers(public_keys, trusted)
    for where in ("checkpoint", "witness"):  # who signed, before what they sign for; the log's own first
        if where == "witness" and witness is not None and not witness and checkpoints:
            # Why a failure: the witness is there to show truncation and rewriting, and an empty one shows
            # nothing, while "OK" told the operator it had been checked. Emptying it is also the simplest way
            # to silence it. Legitimately empty only before the log's first checkpoint (no failure then).
            has = _many(len(checkpoints), "signed checkpoint")
            return _fail(res, None, f"the witness holds no entries, but the log has {has}: it vouches for none "
                         "of them (emptied or replaced, or not the file the guard appends to; a witness "
                         "configured after the fact gets an entry at the next checkpoint)",
                         "at least one witness entry", "none")
        for seq in sorted(by_seq):
            for cp in by_seq[seq]:
                if cp["_where"] == where:
                    bad = signers.problem(cp)
                    if bad is not None:
                        return _fail(res, seq, f"{where} {bad[0]}", bad[1], bad[2])
    if witness is not None and not witness:
        res.notes.append("the witness holds no entries yet (and the log no checkpoint)")

    calc, expect_seq = GENESIS, 1
    bad_head = _check_heads(res, by_seq.get(0, ()), 0, calc)
    if bad_head is not None:
        return bad_head
    ended: list[RowsEnded] = []
    items = _until_ended(rows, ended)
    for item in items:
        if isinstance(item, Span):  # a window another process walked from its stored predecessor: all held
            if item.first != expect_seq or item.prev != calc:  # cannot happen unless the log moved meanwhile
                return _fail(res, expect_seq, "log changed while it was being verified; verify again",
                             item.prev.hex(), calc.hex())
            for seq in sorted(s for s in item.hashes if s in by_seq):
                bad_head = _check_heads(res, by_seq[seq], seq, item.hashes[seq])
                if bad_head is not None:
                    res.records += seq - item.first + 1
                    return bad_head
            calc, expect_seq = item.last_hash, item.first + item.count
            before = res.records
            res.records += item.count
            if progress is not None and res.records // PROGRESS_EVERY > before // PROGRESS_EVERY:
                progress((res.records // PROGRESS_EVERY - before // PROGRESS_EVERY) * PROGRESS_EVERY)
            continue
        seq, leaf, stored, columns = item
        if seq != expect_seq:
            if seq > expect_seq:
                # Why look one row ahead: two rows swapped (51 before 50) read as "50 missing" when seen alone,
                # and an auditor looked for a deleted record. The walk stops here either way.
                after = next(items, None)
                if isinstance(after, tuple) and after[0] == expect_seq:
                    return _fail(res, expect_seq, f"records out of order (found seq {seq} where {expect_seq} was "
                                                  f"due; seq {expect_seq} follows it)",
                                 f"seq {expect_seq} then {expect_seq + 1}", f"seq {seq} then {expect_seq}")
            what = "record missing" if seq > expect_seq else "record out of order or inserted"
            return _fail(res, expect_seq, f"{what} (found seq {seq} where {expect_seq} was due)",
                         stored.hex(), node(calc, leaf).hex())
        calc = node(calc, leaf)
        if calc != stored:
            return _fail(res, seq, "record hash mismatch (edited, moved or torn record)", stored.hex(), calc.hex())
        if columns is not None:  # the sealed bytes are the chain's: it is the columns that were edited
            return _fail(res, seq, *columns)
        res.records += 1
        if seq in by_seq:
            bad_head = _check_heads(res, by_seq[seq], seq, calc)
            if bad_head is not None:
                return bad_head
        if progress is not None and res.records % PROGRESS_EVERY == 0:
            progress(PROGRESS_EVERY)
        expect_seq += 1
    if progress is not None and res.records % PROGRESS_EVERY:
        progress(res.records % PROGRESS_EVERY)
    last = expect_seq - 1
    if ended:
        return _ended(res, ended[0], last)
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
    signed = max(by_seq, default=0)
    if last and not signed:
        if trusted is not None:
            return _unattested(res, last, source)
        res.notes.append(f"no checkpoint covers any record yet: the {_many(last, 'record')} are chained but none "
                         "is signed (a guard signs a checkpoint every audit.checkpoint_every records, every "
                         "audit.checkpoint_seconds and at shutdown)")
    elif last > signed:
        res.notes.append(f"the {_many(last - signed, 'record')} after the last checkpoint (seq {signed}), seq "
                         f"{signed + 1}-{last}, are chained but not yet signed")
    return res


def _until_ended(rows: Iterable[LeafRow | Span], ended: list[RowsEnded]) -> Iterator[LeafRow | Span]:
    """``rows`` until its source raises RowsEnded, which is kept in ``ended`` for the walk to report after the
    last row it had (the rows before it are checked first: an earlier failure is the first failure)."""
    try:
        yield from rows
    except RowsEnded as exc:
        ended.append(exc)


def _ended(res: VerifyResult, exc: RowsEnded, last: int) -> VerifyResult:
    """A source that stopped at a damaged line, reported at the seq after the last record read."""
    where = f"after seq {last}" if last else "before any record"
    if exc.torn:
        problem = (f"torn tail: the log file ends in the middle of line {exc.line}, {where} (a truncated copy or "
                   "an interrupted write: the records and checkpoints that followed, if any, are missing)")
        return _fail(res, last + 1, problem, "a complete last line", f"line {exc.line} cut off ({exc.why})")
    problem = f"log file damaged: line {exc.line}, {where}, is {exc.why} (edited or corrupted)"
    return _fail(res, last + 1, problem, "a log entry on every line", f"line {exc.line}: {exc.why}")


def _unattested(res: VerifyResult, last: int, source: Source) -> VerifyResult:
    """Records, keys pinned, and no checkpoint or witness entry at seq 1 or later: a failure.

    Why a failure and not the note it used to be: the pinned key is the verifier saying "I trust only what this
    key signed". A log (or bundle) whose checkpoints were dropped, its records cut and its head line rewritten is
    consistent with itself and chained, and printed OK with no checkpoint verified: nothing the key signed vouches
    for any of it. Without --pubkey the log's own keys are trusted anyway, and a note says nothing is signed.

    Why for a store too, although a guard just started has no checkpoint yet: the store is no more trusted than
    a bundle (whoever can write to it can delete the checkpoint rows and rewrite the records), and nothing in the
    log can tell a new log from a stripped one (its timestamps are as writable as the rest). The benign case ends
    by itself: the writer signs a checkpoint after audit.checkpoint_every records or audit.checkpoint_seconds from
    its start (the timer signs even when idle), and at shutdown (mlguard/audit/writer.py), so the message says to
    verify again then; the stripped log never gets one."""
    n = _many(last, "record")
    problem = f"no checkpoint signed by a pinned key covers any of the {n}: nothing attests them, so "
    if source == "store":
        problem += ("they could have been cut or rewritten by whoever can write to the store. A log just started "
                    "has no checkpoint until its first one (after audit.checkpoint_every records or "
                    "audit.checkpoint_seconds, 1000 and 60 s by default, or at shutdown): if the guard started "
                    "that recently, verify again after it")
    else:
        problem += (f"they could have been cut or rewritten by whoever made this {source} (its checkpoints "
                    "dropped, records cut, head line rewritten); a bundle of a guard's log carries every "
                    "checkpoint, and a log is signed every audit.checkpoint_every records, every "
                    "audit.checkpoint_seconds and at shutdown")
    return _fail(res, None, problem, "a checkpoint signed by a pinned key at seq 1 or later",
                 "none (no checkpoint, or only at seq 0)")


class _Signers:
    """Who may sign checkpoints: the keys the log carries, by key id, or only the ``trusted`` (pinned) ones.

    Why pinned keys are tried whatever key id a checkpoint names: the key id is the log's word, and a forged or
    trimmed bundle need not carry the pinned key under its id (one key pinned of two, the other dropped from
    the bundle, made the witness's genuine entries look signed by an untrusted key). A checkpoint is trusted when
    its signature verifies under a pinned key; the key id only names the signer in the report."""

    def __init__(self, carried: dict[str, bytes], trusted: dict[str, bytes] | None) -> None:
        self.carried = carried
        self.trusted = trusted

    def problem(self, cp: dict[str, Any]) -> Failure | None:
        """None when ``cp`` is signed by a trusted key, else (problem, expected, calculated)."""
        kid = str(cp.get("kid"))
        if self.trusted is None:
            pub = self.carried.get(kid)
            if pub is None:
                return (f"signed by key {kid}, for which the log carries no public key",
                        f"a public key for {kid}", "none in the log")
            if checkpoint_valid(cp, {kid: pub}):
                return None
            return ("signature invalid", f"a valid signature by {kid}", "a signature that does not verify")
        pinned = self.trusted.get(kid)
        if pinned is not None and checkpoint_valid(cp, {kid: pinned}):
            return None
        if any(checkpoint_valid(cp, {kid: pub}) for pub in self.trusted.values() if pub != pinned):
            return None
        if pinned is not None:
            return ("signature invalid", f"a valid signature by {kid} (pinned)", "a signature that does not verify")
        trusted = ", ".join(sorted(self.trusted)) or "none pinned"
        carried = self.carried.get(kid)
        if carried is not None and checkpoint_valid(cp, {kid: carried}):
            why = (f"signed by key {kid}, which is not among the trusted public keys: a key the log carries but "
                   "nobody pinned (the log was signed by someone else; or, after `mlguard keys rotate`, pin the "
                   "new signing key too: --pubkey may be given more than once)")
        else:
            why = (f"signed by key {kid}, which is not among the trusted public keys (nor does its signature verify "
                   "under any key the log carries)")
        return why, f"signed by a trusted key ({trusted})", f"signed by {kid}"


def _check_heads(res: VerifyResult, cps: Iterable[dict[str, Any]], seq: int, calc: bytes) -> VerifyResult | None:
    """Every entry at ``seq`` (signatures already checked) must sign the recomputed chain head there."""
    for cp in cps:
        if cp.get("head") != calc.hex():
            return _fail(res, seq, f"{cp['_where']} head differs from the recomputed chain",
                         str(cp.get("head")), calc.hex())
    return None


def _many(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _fail(res: VerifyResult, seq: int | None, problem: str, expected: str | None = None,
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

    ``jobs`` worker processes (default: one per core) read the log in seq windows, hash its records' leaves and
    compare their clear columns with their sealed headers; this process walks the chain over their results in
    order (one short hash per record), so the verdict is the one a single process reaches (tests/audit/
    test_parallel.py and test_verify_columns.py compare them)."""
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
                             public_keys=public_keys, trusted=trusted, witness=witness, progress=progress,
                             source="store")
    finally:
        results.close()  # a failure found early: stop the workers now, not when the generator is collected


def _walk_window(window: tuple[int, int | None]) -> list[LeafRow] | list[Span]:
    """Read and walk one window in a worker: a Span when it is whole (chained, and every record's columns its
    sealed header's), else its rows (seq, leaf, stored hash, column failure) so the parent's walk finds and
    reports the failure exactly as one process would."""
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
        match = columns_match
        for seq, sealed, stored, audit_id, ts, kind, route, subject in store.iter_verify(since_seq=after,
                                                                                       to_seq=upto):
            leaf = leaf_state()
            leaf.update(sealed)
            if seq != expect or sha256(NODE + calc + leaf.digest()).digest() != stored:
                break
            if (not match(seq, sealed, audit_id, ts, kind, route, subject)
                    and column_problem(seq, sealed, audit_id, ts, kind, route, subject) is not None):
                break
            if seq in cp_seqs:
                hashes[seq] = stored
            calc, expect = stored, expect + 1
        else:
            return [Span(after + 1, expect - after - 1, prev, calc, hashes)] if expect > after + 1 else []
    # not whole (or its predecessor is missing): hand over the rows, read again, for the exact report
    return list(checked_leaf_rows(store.iter_verify(since_seq=after, to_seq=upto)))
