"""PII soak: process memory while unique free-text notes go through the redactor, with and without spaCy's zone.

    .venv/bin/python bench/pii_soak.py [--notes 20000] [--every 2000] [--cache-size 4096]
        [--mode both|all|zone|nozone|renew] [--renew-after 5000] [--tokenizer-only]

Why: every request of the credit example carries a free-text note that no earlier request had (names, numbers,
typos). spaCy interns each new word in its Vocab (StringStore string, lexeme, tokenizer-cache entry) for the life
of the process, so a server grows without bound. ``PIIEngine`` runs detection inside ``nlp.memory_zone()``;
this script shows the difference in process RSS (VmRSS from /proc/self/status) and ``len(nlp.vocab.strings)``.

Each mode runs in its own fresh subprocess (RSS figures are not comparable inside one process). The documents
are built like the example's requests after the guard has dropped protected attributes: a few declared PII
fields (cache hits after the first request, as in service) and one unique ~200-character note generated here
from a seeded random source (no external data). Detection goes through ``Redactor.redact`` with the same
engine settings the pii stage uses, so the span cache (``pii_engine.cache_size``) fills as it would in service.

Modes: ``nozone`` (no zone, no reload), ``zone`` (zone, no reload: ``renew_after: 0``), ``renew`` (zone, and the
pipeline reloaded every ``--renew-after`` notes, as ``pii_engine.renew_after`` does in service; the zone frees
the words, the reload frees the hash-table slots they leave: engine module docstring). ``both`` = nozone +
zone; ``all`` adds renew.

``--tokenizer-only`` replaces detection by spaCy's tokenizer alone (``nlp.make_doc`` inside the zone, the
engine's own lock, counter and reload): some 20 times faster, so hundreds of thousands of notes show how the
hash tables grow in doubling steps without the reload, and stay bounded with it.

Also printed: the cost of entering and leaving an empty zone, and the per-note time of both modes (the zone
stops the tokenizer from caching new words); on a shared 2-core machine these timings are noisy.
Linux only (reads /proc/self/status).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_SYLLABLES = ("ka", "lo", "mi", "ren", "dra", "vel", "tor", "sun", "bek", "zi", "an", "or", "qui", "pal", "ste",
              "nov", "yth", "gar", "ul", "fen", "mar", "is", "co", "bri")
_WORDS = ("the", "applicant", "called", "about", "a", "late", "payment", "on", "account", "and", "said", "that",
          "her", "his", "employer", "moved", "to", "new", "office", "in", "March", "will", "send", "documents",
          "by", "next", "week", "loan", "for", "car", "repair", "reference", "number", "spoke", "with")


def rss_mb() -> float:
    """Resident set size of this process in MB (VmRSS)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def make_note(rng: random.Random, length: int = 200) -> str:
    """A note of about ``length`` characters mixing common words with made-up names, words and numbers."""
    def made_up() -> str:
        return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))

    parts: list[str] = []
    size = 0
    while size < length:
        r = rng.random()
        if r < 0.12:
            part = f"{made_up().capitalize()} {made_up().capitalize()}"
        elif r < 0.25:
            part = str(rng.randint(0, 10 ** rng.randint(2, 9)))
        elif r < 0.45:
            part = made_up()
        else:
            part = rng.choice(_WORDS)
        parts.append(part)
        size += len(part) + 1
    return " ".join(parts)[:length].rstrip() + "."


def make_doc(rng: random.Random) -> dict[str, Any]:
    return {"name": "Maria Lopez", "email": "maria.lopez@example.com", "phone": "+1 415 555 0134",
            "zip_code": "94110", "amount": 12000, "note": make_note(rng)}


def run_mode(zone: bool, notes: int, every: int, cache_size: int, seed: int, renew_after: int = 0,
             tokenizer_only: bool = False) -> dict[str, Any]:
    """One soak in this process; prints a line per ``every`` notes and returns the figures."""
    from mlguard.config.pii import PIIEngineSettings
    from mlguard.pii.engine import PIIEngine
    from mlguard.pii.redactor import Redactor

    settings = PIIEngineSettings(cache_size=cache_size, renew_after=renew_after)
    engine = PIIEngine(settings)
    engine.use_memory_zone = zone
    redactor = Redactor({}, settings, engine=engine)
    strings = engine.nlp.vocab.strings
    rng = random.Random(seed)

    def tokenize(doc: dict[str, Any]) -> None:
        # the engine's analyze_many steps with the NER pass left out (its private lock, counter and reload)
        with engine._lock:
            if renew_after and engine.scanned >= renew_after:
                engine._renew_locked()
            engine.scanned += 1
            with engine.nlp.memory_zone():
                engine.nlp.make_doc(doc["note"])

    work = tokenize if tokenizer_only else redactor.redact
    for _ in range(20):  # warm-up: lazy imports, first-call allocations
        work(make_doc(rng))
    gc.collect()
    start_rss, start_strings = rss_mb(), len(strings)
    label = (("zone" if zone else "no zone") + (f", reload every {renew_after}" if renew_after else "")
             + (", tokenizer only" if tokenizer_only else ""))
    print(f"[{label}] after warm-up: rss {start_rss:.1f} MB, strings {start_strings}", flush=True)
    points: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    busy = 0.0
    for i in range(1, notes + 1):
        doc = make_doc(rng)
        t = time.perf_counter()
        work(doc)
        busy += time.perf_counter() - t
        if i % every == 0:
            gc.collect()
            strings = engine.nlp.vocab.strings  # a reload brings a new store
            point = {"notes": i, "rss_mb": round(rss_mb(), 1), "strings": len(strings),
                     "ms_per_note": round(1000 * busy / i, 2)}
            points.append(point)
            print(f"[{label}] {i:>6} notes: rss {point['rss_mb']:.1f} MB (+{point['rss_mb'] - start_rss:.1f}), "
                  f"strings {point['strings']} (+{point['strings'] - start_strings}), "
                  f"{point['ms_per_note']:.2f} ms/note, {time.perf_counter() - t0:.0f} s", flush=True)
    return {"mode": label, "start_rss_mb": round(start_rss, 1), "start_strings": start_strings, "points": points}


def zone_overhead(repeats: int = 2000) -> float:
    """Microseconds to enter and leave an empty ``nlp.memory_zone()``."""
    from mlguard.config.pii import PIIEngineSettings
    from mlguard.pii.engine import get_engine

    nlp = get_engine(PIIEngineSettings()).nlp
    t = time.perf_counter()
    for _ in range(repeats):
        with nlp.memory_zone():
            pass
    return 1e6 * (time.perf_counter() - t) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--notes", type=int, default=20000)
    ap.add_argument("--every", type=int, default=2000)
    ap.add_argument("--cache-size", type=int, default=4096, help="pii_engine.cache_size (span cache entries)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--mode", choices=("both", "all", "zone", "nozone", "renew"), default="both")
    ap.add_argument("--renew-after", type=int, default=5000, help="pipeline reload interval of the renew mode")
    ap.add_argument("--tokenizer-only", action="store_true", help="tokenize instead of detect (much faster)")
    ap.add_argument("--child", choices=("zone", "nozone", "renew"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        result = run_mode(args.child != "nozone", args.notes, args.every, args.cache_size, args.seed,
                          args.renew_after if args.child == "renew" else 0, args.tokenizer_only)
        print("RESULT " + json.dumps(result), flush=True)
        return
    print(f"empty memory_zone enter+exit: {zone_overhead():.1f} us", flush=True)
    modes = {"both": ("nozone", "zone"), "all": ("nozone", "zone", "renew")}.get(args.mode, (args.mode,))
    results = []
    for mode in modes:
        cmd = [sys.executable, __file__, "--child", mode, "--notes", str(args.notes), "--every", str(args.every),
               "--cache-size", str(args.cache_size), "--seed", str(args.seed), "--renew-after", str(args.renew_after),
               *(["--tokenizer-only"] if args.tokenizer_only else [])]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        for line in proc.stdout.splitlines():
            if line.startswith("RESULT "):
                results.append(json.loads(line[len("RESULT "):]))
            else:
                print(line)
    print("\nsummary (RSS growth after warm-up; strings added to the StringStore; mean time per note):")
    for r in results:
        last = r["points"][-1]
        half = r["points"][len(r["points"]) // 2 - 1] if len(r["points"]) > 1 else last
        print(f"  {r['mode']:>7}: {last['notes']} notes, rss {r['start_rss_mb']:.1f} -> {last['rss_mb']:.1f} MB "
              f"(+{last['rss_mb'] - r['start_rss_mb']:.1f}; second half +{last['rss_mb'] - half['rss_mb']:.1f}), "
              f"strings +{last['strings'] - r['start_strings']}, {last['ms_per_note']:.2f} ms/note")


if __name__ == "__main__":
    main()
