"""The engine does not keep what it reads: spaCy's StringStore stays bounded over unique free text.

Without ``nlp.memory_zone()`` spaCy interns every new word of every note for the life of the process (about ten
strings per 200-character note here), which a soak of the credit example measured as unbounded RSS growth. These
tests count ``len(nlp.vocab.strings)`` (exact, unlike ``len(nlp.vocab)``, whose counter spaCy never decrements)
rather than RSS, which is noisy. The texts are generated here from a seeded random source.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

import pytest

from mlguard.pii.engine import PIIEngine, Span
from mlguard.pii.redactor import Redactor

_SYLLABLES = ("ka", "lo", "mi", "ren", "dra", "vel", "tor", "sun", "bek", "zi", "an", "or", "qui", "pal", "ste",
              "nov", "yth", "gar", "ul", "fen")
_WORDS = ("the", "applicant", "called", "about", "a", "late", "payment", "on", "account", "and", "said", "her",
          "employer", "moved", "to", "new", "office", "will", "send", "documents", "next", "week")
_FIRST = ("John", "Maria", "Wei", "Fatima", "Olga", "Pedro", "Aisha", "Liam")
_LAST = ("Smith", "Garcia", "Chen", "Okafor", "Novak", "Silva", "Khan", "Murphy")


def _made_up(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(3, 5)))


def _note(rng: random.Random, serial: int) -> str:
    """About 200 characters: common words, made-up words and numbers, and a serial no other note has."""
    parts = [f"ref{serial}x{_made_up(rng)}"]
    while sum(len(p) + 1 for p in parts) < 200:
        r = rng.random()
        if r < 0.3:
            parts.append(_made_up(rng))
        elif r < 0.45:
            parts.append(str(rng.randint(10, 10**8)))
        else:
            parts.append(rng.choice(_WORDS))
    return " ".join(parts)


def _notes(seed: int, count: int, start: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [_note(rng, start + i) for i in range(count)]


def _pii_note(rng: random.Random) -> str:
    """A note with values the engine must find: a person, an e-mail address, a phone number, an SSN."""
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    return (f"Spoke with {first} {last} about {_made_up(rng)} {rng.randint(100, 999)}; reach her at "
            f"{first.lower()}.{last.lower()}@example.com or (415) 555-{rng.randint(1000, 9999)}, "
            f"SSN {rng.randint(132, 665)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}.")


@pytest.fixture
def zone_off(engine: PIIEngine) -> Iterator[PIIEngine]:
    """The shared engine with the zone disabled for one test (restored afterwards)."""
    engine.use_memory_zone = False
    try:
        yield engine
    finally:
        engine.use_memory_zone = True


def _run(engine: PIIEngine, texts: list[str], batch: int = 25) -> list[list[Span]]:
    out: list[list[Span]] = []
    for i in range(0, len(texts), batch):
        out.extend(engine.analyze_many(texts[i:i + batch]))
    return out


def test_string_store_stays_bounded_over_thousands_of_unique_notes(engine: PIIEngine) -> None:
    strings = engine.nlp.vocab.strings
    texts = _notes(seed=11, count=2000, start=1_000_000)
    _run(engine, texts[:25])
    baseline = len(strings)
    sizes = []
    for i in range(25, len(texts), 25):
        engine.analyze_many(texts[i:i + 25])
        sizes.append(len(strings))
    assert max(sizes) - baseline <= 20, f"StringStore grew by {max(sizes) - baseline} strings over 2,000 notes"
    # The words of the last batch are gone, not merely counted differently.
    last_words = {w for t in texts[-25:] for w in t.split() if w.startswith("ref")}
    assert last_words and not any(w in strings for w in last_words)


def test_without_the_zone_the_store_grows(zone_off: PIIEngine) -> None:
    """The counter-check: the same kind of input grows the store when the zone is off, so the bound above is
    the zone's doing and not a property of the generated texts."""
    strings = zone_off.nlp.vocab.strings
    before = len(strings)
    _run(zone_off, _notes(seed=12, count=100, start=2_000_000))
    assert len(strings) - before > 500


def test_detection_is_the_same_inside_the_zone(engine: PIIEngine, zone_off: PIIEngine) -> None:
    rng = random.Random(13)
    texts = [_pii_note(rng) for _ in range(60)]
    without = _run(zone_off, texts)
    zone_off.use_memory_zone = True
    with_zone = _run(engine, texts)
    assert with_zone == without
    found = {s.entity for spans in with_zone for s in spans}
    assert {"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "US_SSN"} <= found


def test_redacted_text_is_built_from_plain_values_after_the_zone(engine: PIIEngine) -> None:
    """Spans outlive the zone (cache, operators): the redacted notes still hide every planted value."""
    rng = random.Random(14)
    notes = [_pii_note(rng) for _ in range(20)]
    redactor = Redactor({}, engine=engine)
    results = redactor.redact_many([{"note": n} for n in notes])
    for note, (doc, findings) in zip(notes, results, strict=True):
        assert isinstance(doc, dict)
        email = note.split("reach her at ")[1].split(" ")[0]
        ssn = note.rsplit("SSN ", 1)[1].rstrip(".")
        assert email not in doc["note"] and ssn not in doc["note"]
        assert {"EMAIL_ADDRESS", "US_SSN"} <= {f.entity for f in findings}


def test_concurrent_callers_get_their_own_results_and_the_store_stays_bounded(engine: PIIEngine) -> None:
    """The stage calls the engine from worker threads; the zone is opened and closed under the engine's lock."""
    rng = random.Random(15)
    batches = [[_pii_note(rng) for _ in range(10)] + _notes(seed=100 + k, count=10, start=3_000_000 + 10 * k)
               for k in range(8)]
    baseline = len(engine.nlp.vocab.strings)
    expected = [engine.analyze_many(b) for b in batches]
    got: dict[int, list[list[Span]]] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for _ in range(3):
                got[k] = engine.analyze_many(batches[k])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [got[k] for k in range(len(batches))] == expected
    assert len(engine.nlp.vocab.strings) - baseline <= 20


def test_pipeline_is_reloaded_after_renew_after_texts_and_finds_the_same() -> None:
    """spaCy's hash tables keep the slots of freed words (engine module docstring): every ``renew_after`` texts
    the pipeline is reloaded, the old one released first, and detection is unchanged."""
    import gc
    import weakref

    from mlguard.config.pii import PIIEngineSettings

    eng = PIIEngine(PIIEngineSettings(renew_after=30))
    rng = random.Random(5)
    probe = [_pii_note(rng) for _ in range(4)]
    before = eng.analyze_many(probe)
    assert all(any(s.entity == "US_SSN" for s in spans) for spans in before)
    first = weakref.ref(eng.nlp)
    _run(eng, _notes(seed=3, count=26), batch=13)  # 30 texts scanned: the next call reloads first
    assert eng.scanned == 30 and eng.renewals == 0 and first() is eng.nlp
    after = eng.analyze_many(probe)
    assert eng.renewals == 1 and eng.scanned == len(probe)
    gc.collect()
    assert first() is None, "the old pipeline is still referenced"
    assert eng._nlp_engine.nlp == {"en": eng.nlp}
    assert after == before


def test_a_failed_reload_keeps_detecting(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import spacy

    from mlguard.config.pii import PIIEngineSettings

    eng = PIIEngine(PIIEngineSettings(renew_after=1))
    real_load = spacy.load
    calls = []

    def flaky(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("disk hiccup")
        return real_load(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(spacy, "load", flaky)
    rng = random.Random(9)
    note = _pii_note(rng)
    eng.analyze_many([note])
    with caplog.at_level("ERROR", logger="mlguard.pii.engine"):
        spans = eng.analyze_many([note])  # reload fails once, the pipeline is loaded again, detection goes on
    assert len(calls) == 2 and eng.renewals == 1
    assert any(s.entity == "US_SSN" for s in spans[0])
    assert any(r.getMessage() == "pii pipeline reload failed" for r in caplog.records)
