"""Generate the tamper test vectors: one intact log and one corruption per file (deterministic).

Run from the repo root:  .venv/bin/python tests/audit/vectors/make_vectors.py
Each file is a bare bundle log (see mlguard/audit/bundle.py); expected.json maps file -> the seq at which
``mlguard audit verify --bundle`` must report the failure (null: intact). Keys, nonces, data keys and
timestamps are derived from fixed seeds, so re-running produces byte-identical files (a test checks it).
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from mlguard.audit.chain import GENESIS, link, make_checkpoint
from mlguard.audit.record import Pending, canonical, iso
from mlguard.audit.seal import Sealer
from mlguard.keys import Keyring

HERE = Path(__file__).resolve().parent
T0 = 1_790_000_000.0
N = 10
CHECKPOINTS = (4, 8, 10)


class _Counter:
    """Deterministic byte source (a hash counter): test vectors only, never for real keys."""

    def __init__(self, label: bytes) -> None:
        self.label, self.i = label, 0

    def __call__(self, n: int) -> bytes:
        self.i += 1
        out = b""
        while len(out) < n:
            out += hashlib.sha256(self.label + self.i.to_bytes(8, "big") + len(out).to_bytes(4, "big")).digest()
        return out[:n]


class _MemTx:
    def __init__(self) -> None:
        self.keys: dict[tuple[str, str, str], tuple[str, bytes]] = {}

    def key_generation(self) -> int:
        return 0

    def insert_data_keys(self, rows: list[tuple[str, str, str, str, str, bytes]]) -> None:
        for key_id, subject, domain, period, _, wrapped in rows:
            self.keys[(subject, domain, period)] = (key_id, wrapped)



def build_log(seed: bytes = b"mlguard-vectors-seed-000000000000", label: bytes = b"log") -> list[dict[str, Any]]:
    ring = Keyring.from_seed(seed)
    sealer = Sealer(ring, new_key=_Counter(label + b"key"))
    items = [Pending(f"rec-{i:03d}", iso(T0 + i), "exchange", "/predict", f"subj{i % 3}",
                     canonical({"i": i, "input": {"income": 1000 * i}}), canonical({"sex": "F" if i % 2 else "M"}))
             for i in range(1, N + 1)]
    sealed = sealer.seal_batch(_MemTx(), items, 0, GENESIS, link)  # type: ignore[arg-type]
    lines: list[dict[str, Any]] = [{"t": "key", "kid": k, "pub": v.hex()} for k, v in ring.public_keys().items()]
    lines.append({"t": "head", "seq": sealed[-1][0], "hash": sealed[-1][2].hex()})
    lines += [{"t": "rec", "seq": s, "hash": h.hex(), "sealed": base64.b64encode(b).decode()} for s, b, h in sealed]
    for cp_seq in CHECKPOINTS:
        lines.append({"t": "cp", **make_checkpoint(ring, cp_seq, sealed[cp_seq - 1][2], ts=T0 + 100 + cp_seq)})
    return lines


def _idx(lines: list[dict[str, Any]], t: str, seq: int) -> int:
    return next(i for i, d in enumerate(lines) if d["t"] == t and d["seq"] == seq)


def vectors() -> dict[str, tuple[list[dict[str, Any]], int | None]]:
    base = build_log()
    out: dict[str, tuple[list[dict[str, Any]], int | None]] = {"intact.jsonl": (base, None)}

    v = json.loads(json.dumps(base))
    i = _idx(v, "rec", 5)
    raw = bytearray(base64.b64decode(v[i]["sealed"]))
    raw[len(raw) // 2] ^= 0x01
    v[i]["sealed"] = base64.b64encode(bytes(raw)).decode()
    out["flipped_byte.jsonl"] = (v, 5)

    v = json.loads(json.dumps(base))
    del v[_idx(v, "rec", 5)]
    out["deleted_record.jsonl"] = (v, 5)

    v = json.loads(json.dumps(base))
    a, b = _idx(v, "rec", 5), _idx(v, "rec", 6)
    v[a], v[b] = {**v[b], "seq": 5}, {**v[a], "seq": 6}  # contents swapped, seq column kept (as in a table)
    out["swapped_records.jsonl"] = (v, 5)

    v = json.loads(json.dumps(base))
    a, b = _idx(v, "rec", 5), _idx(v, "rec", 6)
    v[a], v[b] = v[b], v[a]  # rows out of order
    out["reordered_records.jsonl"] = (v, 5)

    v = json.loads(json.dumps(base))
    foreign = next(d for d in build_log(b"another-seed-for-a-foreign-log-00", b"other") if d.get("seq") == 6
                   and d["t"] == "rec")
    for d in v:  # renumber what follows, as an inserter would
        if d["t"] == "rec" and d["seq"] >= 6:
            d["seq"] += 1
    v.insert(_idx(v, "rec", 5) + 1, foreign)
    out["inserted_record.jsonl"] = (v, 6)

    v = json.loads(json.dumps(v))
    prev = bytes.fromhex(next(d for d in v if d["t"] == "rec" and d["seq"] == 5)["hash"])
    for d in v:  # a smarter inserter also recomputes every later hash and the head: the checkpoint at 8 fails
        if d["t"] == "rec" and d["seq"] >= 6:
            prev = link(prev, base64.b64decode(d["sealed"]))
            d["hash"] = prev.hex()
    head = next(d for d in v if d["t"] == "head")
    head.update(seq=N + 1, hash=prev.hex())
    out["inserted_rehashed.jsonl"] = (v, 8)

    v = json.loads(json.dumps(base))
    v = [d for d in v if not (d["t"] == "rec" and d["seq"] > 8)]
    out["truncated_tail.jsonl"] = (v, 9)

    v = json.loads(json.dumps(base))
    i = _idx(v, "cp", 8)
    other = _idx(v, "cp", 4)
    v[i]["sig"] = v[other]["sig"]  # a real signature, but of another checkpoint
    out["checkpoint_signature_replaced.jsonl"] = (v, 8)

    v = json.loads(json.dumps(base))
    wrong = Keyring.from_seed(b"a-different-signing-key-seed-0000")
    for d in v:
        if d["t"] == "key":
            d["pub"] = next(iter(wrong.public_keys().values())).hex()
    out["wrong_key.jsonl"] = (v, 4)
    return out


def render(lines: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(d, sort_keys=True, separators=(",", ":")) + "\n" for d in lines)


def main(target: Path = HERE) -> int:
    expected = {}
    for name, (lines, seq) in vectors().items():
        (target / name).write_text(render(lines), encoding="ascii")
        expected[name] = seq
    (target / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
