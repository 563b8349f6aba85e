"""Memory soak: the guarded credit example ("full" row of bench/e2e.py) under a long run of unique requests.

    python bench/soak.py [--requests 30000] [--every 1000] [--connections 4] [--seed 7] [--stages pii,audit]
                         [--subjects 100] [--max-slope 0.2] [--json PATH]
    python bench/soak.py --quick          # smoke form: 2,000 requests, a sample every 200

Why: issue 7's target is "RSS per worker <= 500 MB with the NER model loaded", and a short benchmark cannot show
it. Live traffic carries notes no earlier request had, and each stage keeps something per request (explanation
store, fairness window, spaCy vocabulary, span cache, audit queue), so the question is whether memory levels off
once every bounded store is full, not what it is after ten seconds. An earlier ad-hoc soak (before the PII
engine ran inside spaCy's ``memory_zone``) saw growth without bound after the 10,000-entry stores filled.

What runs. The server is exactly bench/e2e.py's ``full`` server: ``bench._apps:example_guarded`` under uvicorn
with bench/server.py's flags, the example's mlguard.yaml rewritten into a temporary directory by
``bench.e2e.write_config`` (audit store, keyring, token vault there; ``explain.execution: inline``;
``pii_engine.cache_size: 0``), every stage on unless ``--stages`` picks some (``MLGUARD_BENCH_STAGES``, the
same selection the e2e rows use; ``none`` = the guard's core alone), which is how a culprit is bisected.
``--subjects K`` cycles the applicant id through K subjects (all else unique) to tell per-subject state from
per-request state.

The client is an asyncio HTTP/1.1 client in this process (bench/loadgen.py's request builder and response
reader; keep-alive, a few connections): rate does not matter here, only memory, and a few connections keep the
client's share of the two cores small. Request ``i`` is built from ``random.Random(seed, i)`` alone, so a run
is reproducible whatever the interleaving: a unique applicant id, made-up name, e-mail, phone, SSN, address and
birth date (declared PII fields, each new to the token vault), unique feature values, protected attributes
drawn from the example's categories, and a unique 200-character note mixing common words with made-up names,
e-mail addresses, phone and account numbers (the NER path). No real data.

Sampled every ``--every`` completed requests: the server's VmRSS, RssAnon and RssFile from /proc/<pid>/status
(Linux only). RssFile is mostly mapped code and model files (fixed once loaded); RssAnon is the heap, where
growth shows. Printed: the table, RSS right after ready (what is fixed at start: interpreter, imports, spaCy
model, shap explainer, sklearn model), the growth after that, max RSS against the 500 MB target, the slope over
the last third of the run by least squares (MB per 1,000 requests), the reloads found and the verdict, bounded
or GROWING, with the rule that decided it (``verdict()``, a pure function of the samples):

- No reload in the run: the slope over the last third must be about zero (within ``--max-slope``), as always.
- The PII engine reloads its spaCy pipeline every ``pii_engine.renew_after`` texts, and RSS falls at once (by
  about 45 MB at 100,000 requests in the 130,000-request runs), then climbs back to the plateau it left. A last
  third that takes in the fall and the climb back has a positive slope with memory bounded, so a fall of
  ``RELOAD_DROP_MB`` (10 MB) or more between two samples is taken for a reload, and the run is judged on what a
  reload cannot disguise: GROWING when the peak after the last reload is above the peak before it by more than
  ``--max-slope`` per 1,000 requests between them (rule "peak"); bounded when it is not and memory had levelled
  off before the reload (rule "peak"); otherwise, the slope over the last third of the part after the last
  reload (rule "last segment"). Too few samples for the rule that applies: no verdict, said so.

Exit status 1 on non-2xx answers or connection errors; a target miss or a GROWING verdict is reported, not an
exit status (as in bench/e2e.py). ``--json`` writes the samples, the verdict and the reloads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.e2e import GUARD_TARGET, SERVERS, server_env  # noqa: E402
from bench.loadgen import read_response, request_bytes  # noqa: E402
from bench.server import UVICORN_FLAGS, Server, proc_memory, serve  # noqa: E402

TARGET_MB = 500.0
NOTE_CHARS = 200

_SYLLABLES = ("ka", "lo", "mi", "ren", "dra", "vel", "tor", "sun", "bek", "zi", "an", "or", "qui", "pal", "ste",
              "nov", "yth", "gar", "ul", "fen", "mar", "is", "co", "bri", "hal", "dun", "est", "wy")
_WORDS = ("the", "applicant", "called", "about", "a", "late", "payment", "on", "account", "and", "said", "that",
          "her", "his", "employer", "moved", "to", "new", "office", "in", "March", "will", "send", "documents",
          "by", "next", "week", "loan", "for", "car", "repair", "reference", "number", "spoke", "with", "contact",
          "manager", "at", "reach", "income", "verified", "statement", "bank", "from")
_DOMAINS = ("example.com", "example.org", "inbox.example", "mail.example.net", "fabrikam.example")
_STREETS = ("Ave", "St", "Rd", "Blvd", "Lane", "Way")
_SEX = ("Female", "Male")
_RACE = ("White", "Black", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other")


# ---------------------------------------------------------------------------------------------- inputs


def _made_up(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))


def _name(rng: random.Random) -> str:
    return f"{_made_up(rng).capitalize()} {_made_up(rng).capitalize()}"


def _email(rng: random.Random) -> str:
    return f"{_made_up(rng)}.{_made_up(rng)}{rng.randint(1, 999)}@{rng.choice(_DOMAINS)}"


def _phone(rng: random.Random) -> str:
    return f"{rng.randint(201, 989)}-555-{rng.randint(0, 9999):04d}"


def make_note(rng: random.Random, length: int = NOTE_CHARS) -> str:
    """A note of exactly ``length`` characters: common words mixed with made-up names, e-mails and numbers.

    Made-up words and numbers are what make every note new to spaCy's vocabulary (the growth under test);
    names, e-mails and phone numbers are what the recognisers find, so redaction does real work on each note.
    """
    parts: list[str] = []
    size = 0
    while size < length:
        r = rng.random()
        if r < 0.10:
            part = _name(rng)
        elif r < 0.16:
            part = _email(rng)
        elif r < 0.21:
            part = _phone(rng)
        elif r < 0.32:
            part = str(rng.randint(0, 10 ** rng.randint(2, 9)))
        elif r < 0.50:
            part = _made_up(rng)
        else:
            part = rng.choice(_WORDS)
        parts.append(part)
        size += len(part) + 1
    text = " ".join(parts)[:length - 1].rstrip()
    return (text + "." * length)[:length]


def make_body(seed: int, i: int, subjects: int = 0) -> bytes:
    """Request ``i`` of the run: depends on (seed, i) only, so concurrency does not change what is sent.

    ``subjects`` > 0 cycles the applicant id through that many subjects (everything else stays unique), to tell
    per-subject state (the audit sealer's per-subject data keys) from per-request state."""
    rng = random.Random(f"{seed}:{i}")
    doc = {
        "applicant": {
            "id": f"SOAK-{seed}-{(i % subjects) if subjects > 0 else i:08d}",
            "name": _name(rng),
            "email": _email(rng),
            "phone": _phone(rng),
            "ssn": f"9{rng.randint(0, 99):02d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}",
            "address": f"{rng.randint(1, 99999)} {_made_up(rng).capitalize()} {rng.choice(_STREETS)}, "
                       f"{_made_up(rng).capitalize()}, AZ {rng.randint(10000, 99999)}",
            "dob": f"{rng.randint(1940, 2004)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "sex": rng.choice(_SEX),
            "race": rng.choice(_RACE),
        },
        "features": {
            "education_num": float(rng.randint(1, 16)),
            "hours_per_week": round(rng.uniform(5, 80), 3),
            # i in the value makes every feature vector unique (no explanation could be reused)
            "capital_gain": float(i % 7 == 0) * round(rng.uniform(0, 20000), 2) + i * 1e-3,
            "capital_loss": float(rng.random() < 0.05) * round(rng.uniform(0, 3000), 2),
            "is_self_employed": float(rng.random() < 0.1),
            "is_government": float(rng.random() < 0.15),
            "is_managerial_professional": float(rng.random() < 0.3),
            "is_skilled_technical": float(rng.random() < 0.3),
        },
        "note": make_note(rng),
    }
    return json.dumps(doc, ensure_ascii=False).encode()


# ---------------------------------------------------------------------------------------------- memory


@dataclass
class Sample:
    requests: int
    seconds: float
    rss: float
    anon: float
    file: float


RELOAD_DROP_MB = 10.0
"""RSS falling by at least this much (MB) between two consecutive samples is taken for a reload of the PII pipeline.

Why 10 MB: the reloads measured in the full-server soak (``pii_engine.renew_after``, spaCy's vocabulary and hash
tables thrown away) took 44-45 MB off at once (docs/BENCHMARKS.md, the 130,000-request runs), while between
reloads RSS hardly ever falls (the allocator seldom gives memory back): the moves recorded there otherwise are
rises, the largest a +3.9 MB step, and changes of a tenth of a MB on a plateau. 10 MB is well clear of those and
still catches a reload that frees under a quarter of what those did (a lower ``renew_after``). A smaller
saw-tooth goes undetected and is judged by the whole-run rule, over which it averages out."""

MIN_TAIL_SAMPLES = 3
"""Samples a segment's last third needs before the reload rules take its slope.

A least-squares slope through 2 points is one difference, which one step or the last point of the climb back
after a reload decides alone; 3 is the least that is a fit. The whole-run rule (no reload found) keeps its
minimum of 2, as before, so a run without a reload is judged exactly as it always was."""


@dataclass(frozen=True)
class Reload:
    """A fall of RSS by at least :data:`RELOAD_DROP_MB` between the samples at ``before`` and ``at`` requests."""

    before: int
    at: int
    drop_mb: float


@dataclass(frozen=True)
class Verdict:
    """Whether RSS is bounded over a run, which rule said so and on what.

    ``bounded`` is None when there were too few samples for any rule (``rule`` "none"). ``slope`` is the figure
    the deciding rule compared with ``max_slope``, in MB per 1,000 requests: the least-squares slope for the
    "last third" and "last segment" rules, the rise from the peak before the last reload to the peak after it
    per 1,000 requests between them for the "peak" rule. ``window`` is the span of requests (first and last
    sample) that figure was taken over, ``samples_used`` how many samples it rests on."""

    bounded: bool | None
    rule: str
    reason: str
    max_slope: float
    slope: float | None = None
    window: tuple[int, int] | None = None
    samples_used: int = 0
    reloads: tuple[Reload, ...] = ()
    drop_mb: float = RELOAD_DROP_MB
    peak_before: float | None = None
    peak_after: float | None = None
    level_slope: float | None = None
    segment_slope: float | None = None

    @property
    def label(self) -> str:
        return "no verdict" if self.bounded is None else "bounded" if self.bounded else "GROWING"


def slope_per_1000(points: list[Sample]) -> float | None:
    """Least-squares slope of RSS against requests, in MB per 1,000 requests (None under 2 points)."""
    if len(points) < 2:
        return None
    xs = [p.requests / 1000 for p in points]
    ys = [p.rss for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    if den == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


def last_third(points: list[Sample], start: int, end: int | None = None) -> list[Sample]:
    """The samples in the last third of the span of requests from ``start`` to ``end`` (default: the last sample)."""
    if not points:
        return []
    stop = points[-1].requests if end is None else end
    edge = start + (stop - start) * 2 / 3
    return [p for p in points if p.requests >= edge]


def find_reloads(samples: list[Sample], drop_mb: float = RELOAD_DROP_MB) -> list[int]:
    """Indexes ``i`` of the samples where RSS had fallen by ``drop_mb`` or more since sample ``i - 1``."""
    return [i for i in range(1, len(samples)) if samples[i - 1].rss - samples[i].rss >= drop_mb]


def _fmt(slope: float | None) -> str:
    return "too few samples" if slope is None else f"{slope:+.3f} MB per 1,000 requests"


def verdict(samples: list[Sample], max_slope: float, *, requests: int | None = None,
            drop_mb: float = RELOAD_DROP_MB) -> Verdict:
    """Judge whether RSS is bounded over ``samples`` (in request order); pure, no server.

    ``requests`` is the run's length (default: the last sample's count); ``max_slope`` is MB per 1,000 requests
    still called flat. The rules, in order:

    No reload found (no fall of ``drop_mb`` or more between consecutive samples): rule "last third", as the script
    always judged: the least-squares slope over the samples in the last third of the run (from request
    ``2/3 * requests`` on) must be <= ``max_slope``; under 2 samples there, no verdict.

    Reloads found: the slope over a window that spans a reload reads the fall and the climb back as growth, so
    the run is cut into segments at the falls and judged on what a reload cannot disguise. ``before`` is the
    segment that ends at the last fall (from the fall before it, or from the start), ``after`` the one from the
    last fall to the end of the run.

    1. Rule "peak", GROWING: the peak RSS of ``after`` is above the peak of ``before`` by more than
       ``max_slope`` MB per 1,000 requests between the two peaks (the earlier peak where it was last seen, the
       later where it was first reached). Memory the reload does not free grew from one cycle to the next, at
       more than the rate the whole-run rule allows; this holds whatever the segments' shapes, so it is checked
       first. The tolerance is a rate, not a fixed number of MB, so that the rule is exactly as strict as the
       slope rules: a rise that a slope of ``max_slope`` would make between the peaks is allowed, no more.
    2. Rule "peak", bounded: ``before`` had levelled off before the fall (slope over its last third, at least
       :data:`MIN_TAIL_SAMPLES` samples, <= ``max_slope``) and ``after`` did not climb above that level by
       more than rule 1 allows. Within a cycle memory stopped at a level, and the next cycle stays under it:
       bounded, whether ``after`` has already climbed back to the plateau or is still on its way. A peak alone
       is not enough when ``before`` was still rising at the fall: the fall then cuts the growth short, and a
       short ``after`` stays under ``before``'s peak even with a leak.
    3. Rule "last segment": otherwise (``before`` still rising, or too few samples to tell) the slope over the
       last third of ``after`` (at least :data:`MIN_TAIL_SAMPLES` samples) must be <= ``max_slope``, the
       whole-run rule applied to the part of the run no reload cuts; with too few samples there, no verdict.
    """
    marks = find_reloads(samples, drop_mb)
    reloads = tuple(Reload(samples[i - 1].requests, samples[i].requests, samples[i - 1].rss - samples[i].rss)
                    for i in marks)
    if not marks:
        tail = last_third(samples, 0, requests)
        slope = slope_per_1000(tail)
        window = (tail[0].requests, tail[-1].requests) if tail else None
        if slope is None:
            return Verdict(None, "none", f"no reload found; too few samples in the last third of the run "
                           f"({len(tail)}; use a smaller --every)", max_slope, window=window, samples_used=len(tail),
                           drop_mb=drop_mb)
        bounded = slope <= max_slope
        return Verdict(bounded, "last third",
                       f"no reload found; slope over the last third {_fmt(slope)} "
                       f"{'<=' if bounded else '>'} {max_slope}", max_slope, slope, window, len(tail), drop_mb=drop_mb)

    last = marks[-1]
    prev = marks[-2] if len(marks) > 1 else 0
    before, after = samples[prev:last], samples[last:]
    reload = reloads[-1]
    where = f"the reload at {reload.before:,}..{reload.at:,} requests (-{reload.drop_mb:.1f} MB)"
    # the first sample of the run's first segment stands for request 0, as in the whole-run rule
    level_tail = last_third(before, 0 if prev == 0 else before[0].requests)
    level = slope_per_1000(level_tail) if len(level_tail) >= MIN_TAIL_SAMPLES else None
    seg_tail = last_third(after, after[0].requests, requests)
    seg = slope_per_1000(seg_tail) if len(seg_tail) >= MIN_TAIL_SAMPLES else None
    # the earlier peak where it was last seen and the later one where it was first reached: the rise between
    # them is over the fewest requests, so a step up from one plateau to the next is not spread thin
    peak_b = max(reversed(before), key=lambda s: s.rss)
    peak_a = max(after, key=lambda s: s.rss)
    rate = (peak_a.rss - peak_b.rss) / max(peak_a.requests - peak_b.requests, 1) * 1000
    base = Verdict(None, "none", "", max_slope, reloads=reloads, drop_mb=drop_mb, peak_before=peak_b.rss,
                   peak_after=peak_a.rss, level_slope=level, segment_slope=seg)
    peaks = (f"peak {peak_a.rss:.1f} MB at {peak_a.requests:,} requests after {where} against {peak_b.rss:.1f} MB "
             f"at {peak_b.requests:,} before it ({rate:+.3f} MB per 1,000 requests between them)")
    between = (peak_b.requests, peak_a.requests)
    if rate > max_slope:
        return replace(base, bounded=False, rule="peak", slope=rate, window=between, samples_used=2,
                       reason=f"{peaks} > {max_slope}: memory the reload does not free grew")
    if level is not None and level <= max_slope:
        return replace(base, bounded=True, rule="peak", slope=rate, window=between, samples_used=2,
                       reason=f"{peaks} <= {max_slope}, and memory had levelled off before the reload (slope "
                              f"over that segment's last third {_fmt(level)})")
    not_level = f"memory was still rising before {where} (slope over that segment's last third {_fmt(level)})"
    seg_window = (seg_tail[0].requests, seg_tail[-1].requests) if seg_tail else None
    if seg is None:
        return replace(base, window=seg_window, samples_used=len(seg_tail),
                       reason=f"{not_level}, and too few samples after it ({len(seg_tail)} in its last third, "
                              f"{MIN_TAIL_SAMPLES} needed): run longer or use a smaller --every")
    bounded = seg <= max_slope
    return replace(base, bounded=bounded, rule="last segment", slope=seg, window=seg_window,
                   samples_used=len(seg_tail),
                   reason=f"{not_level}; slope over the last third of the segment after it {_fmt(seg)} "
                          f"{'<=' if bounded else '>'} {max_slope}")


def describe(v: Verdict) -> list[str]:
    """The verdict's lines for the report: the reloads found, then the rule that decided and why."""
    if v.reloads:
        found = "; ".join(f"{r.before:,}..{r.at:,} requests (-{r.drop_mb:.1f} MB)" for r in v.reloads)
    else:
        found = "none"
    lines = [f"reloads found (RSS fell by >= {v.drop_mb:g} MB between two samples): {found}"]
    window = f", {v.window[0]:,}..{v.window[1]:,} requests, {v.samples_used} samples" if v.window else ""
    lines.append(f"memory verdict (rule: {v.rule}{window}): {v.label}: {v.reason}")
    return lines


# ---------------------------------------------------------------------------------------------- client


@dataclass
class Counts:
    done: int = 0
    errors: int = 0
    non_2xx: int = 0
    statuses: dict[int, int] | None = None


async def drive(srv: Server, args: argparse.Namespace, samples: list[Sample]) -> Counts:
    """Send ``args.requests`` unique requests over ``args.connections`` keep-alive connections; sample RSS."""
    parts = urlsplit(srv.base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    counts = Counts(statuses={})
    assert counts.statuses is not None
    statuses = counts.statuses
    next_i = 0
    started = time.perf_counter()
    next_sample = args.every

    def sample() -> None:
        mem = proc_memory(srv.pid)
        s = Sample(counts.done, time.perf_counter() - started, mem.get("VmRSS", 0.0), mem.get("RssAnon", 0.0),
                   mem.get("RssFile", 0.0))
        prev = samples[-1].rss if samples else s.rss
        samples.append(s)
        rate = s.requests / s.seconds if s.seconds else 0.0
        print(f"{s.requests:>9,} {s.rss:>9.1f} {s.rss - prev:>+8.1f} {s.anon:>9.1f} {s.file:>8.1f} "
              f"{s.seconds:>8.0f} {rate:>7.1f}", flush=True)

    async def worker() -> None:
        nonlocal next_i, next_sample
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while next_i < args.requests:
            i = next_i
            next_i += 1
            payload = request_bytes("POST", parts.netloc, "/predict", make_body(args.seed, i, args.subjects))
            for attempt in range(3):
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_connection(host, port)
                    assert reader is not None
                    writer.write(payload)
                    await writer.drain()
                    status, close = await asyncio.wait_for(read_response(reader), timeout=120)
                except (TimeoutError, OSError, asyncio.IncompleteReadError):
                    counts.errors += 1
                    if writer is not None:
                        writer.close()
                    reader = writer = None
                    if attempt == 2:
                        raise
                    await asyncio.sleep(0.1)
                    continue
                break
            statuses[status] = statuses.get(status, 0) + 1
            if not 200 <= status < 300:
                counts.non_2xx += 1
            counts.done += 1
            if close and writer is not None:
                writer.close()
                reader = writer = None
            if counts.done >= next_sample:
                next_sample += args.every
                sample()
        if writer is not None:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(args.connections)))
    return counts


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=30_000)
    ap.add_argument("--every", type=int, default=1_000, help="sample RSS every this many completed requests")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--subjects", type=int, default=0,
                    help="cycle the applicant id through this many subjects (default 0: unique per request)")
    ap.add_argument("--stages", help="MLGUARD_BENCH_STAGES for the server (comma list or 'none'); default: all")
    ap.add_argument("--max-slope", type=float, default=0.2,
                    help="MB per 1,000 requests still called bounded: the slope over the last third, or over the "
                         "last third after the last reload, or the rise between the peaks around it (default 0.2)")
    ap.add_argument("--quick", action="store_true", help="smoke form: 2,000 requests, a sample every 200")
    ap.add_argument("--json", type=Path, help="also write the samples and verdict here")
    args = ap.parse_args(argv)
    if args.quick:
        args.requests, args.every = 2_000, 200
    if args.requests < 1 or args.every < 1 or args.connections < 1:
        ap.error("--requests, --every and --connections must be positive")

    spec = SERVERS["full"]
    samples: list[Sample] = []
    print(f"server: {GUARD_TARGET} (factory) under uvicorn {' '.join(UVICORN_FLAGS)}; stages: "
          f"{args.stages or 'all'}; subjects: {args.subjects or 'unique'}; {args.requests:,} unique requests "
          f"over {args.connections} connections, seed {args.seed}", flush=True)
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mlguard-soak-") as tmp:
        env = server_env(spec, Path(tmp))
        if args.stages:
            env["MLGUARD_BENCH_STAGES"] = args.stages
        with serve(spec.target, factory=spec.factory, env=env, timeout=180) as srv:
            ready = proc_memory(srv.pid)
            print(f"ready in {srv.ready_s:.1f} s; RSS right after ready {ready.get('VmRSS', 0):.1f} MB "
                  f"(anon {ready.get('RssAnon', 0):.1f}, file {ready.get('RssFile', 0):.1f})", flush=True)
            print(f"{'requests':>9} {'RSS MB':>9} {'delta':>8} {'anon MB':>9} {'file MB':>8} {'secs':>8} "
                  f"{'req/s':>7}", flush=True)
            counts = asyncio.run(drive(srv, args, samples))
            end = proc_memory(srv.pid)
    if not samples:
        print("no sample taken", file=sys.stderr)
        return 1

    rss_ready = ready.get("VmRSS", 0.0)
    first = samples[0]
    max_rss = max(max(s.rss for s in samples), end.get("VmRSS", 0.0))
    third = last_third(samples, 0, args.requests)
    slope = slope_per_1000(third)
    slope_all_after_first = slope_per_1000(samples[1:])
    judged = verdict(samples, args.max_slope, requests=args.requests)
    bounded = judged.bounded is True
    print()
    print(f"statuses: {dict(sorted((counts.statuses or {}).items()))}; connection errors {counts.errors}; "
          f"{counts.done:,} requests in {time.perf_counter() - wall:.0f} s")
    print(f"fixed at start (RSS right after ready): {rss_ready:.1f} MB "
          f"(anon {ready.get('RssAnon', 0):.1f}, file {ready.get('RssFile', 0):.1f})")
    print(f"after the first {first.requests:,} requests (lazy loads, first allocations): {first.rss:.1f} MB "
          f"({first.rss - rss_ready:+.1f}; anon {first.anon - ready.get('RssAnon', 0):+.1f}, "
          f"file {first.file - ready.get('RssFile', 0):+.1f})")
    last = samples[-1]
    print(f"grown from then to the end ({last.requests:,} requests): {last.rss - first.rss:+.1f} MB "
          f"(anon {last.anon - first.anon:+.1f}, file {last.file - first.file:+.1f}); peak VmHWM "
          f"{end.get('VmHWM', 0):.1f} MB")
    if slope_all_after_first is not None:
        print(f"slope over the whole run after the first sample: {slope_all_after_first:+.3f} MB per 1,000 requests")
    max_verdict = "met" if max_rss <= TARGET_MB else "MISSED"
    print(f"max RSS {max_rss:.1f} MB vs target {TARGET_MB:.0f} MB: {max_verdict}")
    if slope is None:
        print("slope over the last third: too few samples (use a smaller --every)")
    else:
        print(f"slope over the last third ({third[0].requests:,}..{third[-1].requests:,} requests, {len(third)} "
              f"samples): {slope:+.3f} MB per 1,000 requests")
    for line in describe(judged):
        print(line)
    if judged.slope is not None and judged.slope > 0:
        # from the later peak for the peak rule (the end may be on the climb back), else from the end
        at_req, at_rss = ((judged.window[1], judged.peak_after) if judged.rule == "peak" and judged.window
                          and judged.peak_after is not None else (last.requests, last.rss))
        if at_rss < TARGET_MB:
            left = (TARGET_MB - at_rss) / judged.slope * 1000
            print(f"at that rate, {TARGET_MB:.0f} MB would be reached after about "
                  f"{max(0.0, at_req + left):,.0f} requests")
    if args.json:
        args.json.write_text(json.dumps({
            "requests": args.requests, "connections": args.connections, "seed": args.seed, "stages": args.stages,
            "subjects": args.subjects,
            "ready": ready, "end": end, "samples": [asdict(s) for s in samples], "statuses": counts.statuses,
            "errors": counts.errors, "max_rss_mb": max_rss, "slope_last_third": slope, "bounded": bounded,
            "reloads": [asdict(r) for r in judged.reloads], "verdict": asdict(judged) | {"label": judged.label},
        }, indent=2))
    if counts.errors or counts.non_2xx:
        print(f"FAILED: {counts.non_2xx} non-2xx answers, {counts.errors} connection errors", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
