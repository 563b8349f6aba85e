"""The detection engine: Presidio's AnalyzerEngine over a spaCy pipeline, built once per process, offline.

Why built by hand rather than with ``NlpEngineProvider().create_engine()``: the provider's ``load()`` calls
spaCy's download command when the model is not installed (a network fetch at run time) and loads every pipeline
component. We check the model is installed (an error naming the pip package otherwise), load it with the
components detection does not need excluded (parser, tagger, attribute_ruler, lemmatizer: NER needs only
tok2vec + ner), and hand the loaded pipeline to Presidio's ``SpacyNlpEngine``. Without the lemmatizer the
context enhancer compares lower-cased words instead of lemmas (``keep_lemmatizer`` restores it; see
docs/BENCHMARKS.md for both measured).

Why tldextract is patched: Presidio's e-mail validator calls ``tldextract.extract``, whose default extractor
fetches the public suffix list from the internet on first use. We swap in an extractor that only reads its
bundled snapshot (``suffix_list_urls=()``, ``cache_dir=None``), and we replace Presidio's e-mail recognizer
anyway (it drops addresses whose TLD is not in that list).

One NLP pass per request: ``analyze_many`` pipes every text of a request (or a CLI batch) through ``nlp.pipe``
once and gives each text's artifacts to ``AnalyzerEngine.analyze``.

Why every detection runs inside ``nlp.memory_zone()``: spaCy's Vocab interns every new word it tokenizes (a
string in the StringStore, a lexeme, a tokenizer-cache entry) and keeps it for the life of the process. A
service that sees unique free text (names, reference numbers, typos in a note) therefore grows without bound:
about 10 new strings per 200-character note, several MB per 1,000 requests (bench/pii_soak.py). Inside a zone
those entries are transient and are freed when the zone exits; the model's own vocabulary stays. The zone also
stops the tokenizer from caching new words, which costs little next to NER (measured in bench/pii_soak.py).

Why the pipeline is reloaded every ``pii_engine.renew_after`` texts: the zone frees the transient entries, but
spaCy's hash tables (preshed maps) only mark a freed slot deleted, count it as filled, and double when filled
slots reach 60%; a freed slot is reused only when a later key happens to probe it. So the tables keep growing
with the number of unique words ever seen, in steps that double (+8 MB after about 10,000 notes here, then
+16, +32 ...: some 250 bytes per unique note in the long run). A fresh pipeline has fresh tables. The old one is
released first and the freed memory handed back to the system (glibc ``malloc_trim``), so the reload never
holds two pipelines at once; detection waits for it (about 0.3 s, once per ``renew_after`` texts).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib.metadata
import logging
import re
import threading
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlguard.config.pii import PIIEngineSettings
from mlguard.errors import DependencyMissing, PIIError

log = logging.getLogger("mlguard.pii.engine")

NER_COMPONENTS = ("tok2vec", "ner")
LEMMA_COMPONENTS = ("tok2vec", "tagger", "attribute_ruler", "lemmatizer", "ner")
UNNEEDED = ("parser", "tagger", "attribute_ruler", "lemmatizer", "senter", "morphologizer", "trainable_lemmatizer",
            "textcat", "textcat_multilabel", "entity_linker", "spancat")
"""Components detection does not need (a transformer or tok2vec, and ner, stay)."""



@dataclass(frozen=True, slots=True)
class Span:
    """One detected span in one text: where, what, how sure, and which recognizer. Never the value."""

    entity: str
    start: int
    end: int
    score: float
    recognizer: str


def quiet_presidio_debug() -> None:
    """Hold Presidio's logger at WARNING unless the application set its level, and never below INFO.

    Why never DEBUG: there its context enhancer logs the words around every span it scores ("Context list is:
    <words of the input>"), so any handler at DEBUG, the application's included, would write input text.
    Why WARNING by default: at INFO it logs "Fetching all recognizers for language en" on every analysed text
    and "Loaded recognizer: <name>" for each recognizer built, lines that drown a service's own log and tell
    an operator nothing; its warnings (an entity with no recognizer, a regex timeout) stay. A level the
    application gave this logger itself is its choice and is kept, only raised to INFO if it is below."""
    presidio = logging.getLogger("presidio-analyzer")
    if presidio.level == logging.NOTSET:  # nobody set it: it would follow the root, which may be at DEBUG
        presidio.setLevel(logging.WARNING)
    elif presidio.level < logging.INFO:
        presidio.setLevel(logging.INFO)


def block_tldextract_network() -> None:
    """Make every ``tldextract.extract`` call read only the bundled public-suffix snapshot."""
    import tldextract
    import tldextract.tldextract as tx

    offline = tx.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)
    tx.TLD_EXTRACTOR = offline
    tldextract.TLD_EXTRACTOR = offline  # type: ignore[attr-defined]


def model_identity(nlp: Any, name: str) -> dict[str, Any]:
    """Name, version and a SHA-256 over the model's files (sorted relative paths and contents)."""
    meta = getattr(nlp, "meta", {}) or {}
    digest = hashlib.sha256()
    root = Path(getattr(nlp, "path", "") or "")
    files = 0
    if root.is_dir():
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            with path.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            files += 1
    return {
        "model": name,
        "version": str(meta.get("version", "unknown")),
        "spacy_version": str(meta.get("spacy_version", "")),
        "sha256": digest.hexdigest() if files else None,
        "files": files,
    }


def country_recognizers(countries: Sequence[str], language: str, loaded: set[str]) -> list[Any]:
    """Presidio's recognizers of ``countries`` that its loader left out, made for ``language``; for ``us``,
    the loader's own selection stands.

    Why: Presidio's loader takes a country's recognizers only when their language is the engine's (its German,
    Spanish, Italian, Polish ... ones are tied to their language) and when its default configuration enables them
    (it ships UK_NINO, UK_POSTCODE, CA_SIN and most others disabled), so ``countries: [uk, de, es, pl]`` loaded
    the NHS number alone: a National Insurance number, a PESEL or an NIE in free text reached the model, and
    a policy naming UK_NINO passed every check. They are patterns, checksums and context words (in their own
    language, as the documents are), not NLP: they work on any pipeline. The US ones Presidio leaves out (MBI,
    NPI, claim and referral numbers ...) stay out: mlguard's own medical record, health plan and account
    recognizers cover those fields, and adding Presidio's beside them widened spans (``ID-W123456789``)."""
    import inspect

    from presidio_analyzer import PatternRecognizer
    from presidio_analyzer import predefined_recognizers as predefined

    wanted = {c.lower() for c in countries} - {"us"}
    out: list[Any] = []
    for name in sorted(dir(predefined)):
        cls = getattr(predefined, name)
        if (not inspect.isclass(cls) or not issubclass(cls, PatternRecognizer) or name in loaded
                or str(getattr(cls, "COUNTRY_CODE", "") or "").lower() not in wanted):
            continue
        make: Callable[..., Any] = cls  # each subclass fills in its own entity
        out.append(make(supported_language=language))
    return out


class PIIEngine:
    """Presidio AnalyzerEngine + our recognizers; thread-safe for concurrent ``analyze_many`` calls."""

    use_memory_zone: bool = True
    """Run each ``analyze_many`` inside ``nlp.memory_zone()`` (module docstring: why). False exists only so that
    the soak benchmark and the memory test can show the growth the zone prevents; never turn it off in service."""

    def __init__(self, settings: PIIEngineSettings, *, custom: Sequence[Mapping[str, Any]] = ()) -> None:
        quiet_presidio_debug()  # before the import: importing presidio_analyzer logs its device at INFO
        try:
            import spacy
            from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
            from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
        except ImportError as exc:  # pragma: no cover - base dependency
            raise DependencyMissing(exc.name or "presidio-analyzer", "pii") from None

        from mlguard.pii.recognizers import builtin_recognizers, custom_recognizers

        block_tldextract_network()
        self.settings = settings
        name = settings.spacy_model
        if not (spacy.util.is_package(name) or Path(name).is_dir()):
            raise PIIError(f"spaCy model {name!r} is not installed (pip install it; it is never downloaded)")
        keep = LEMMA_COMPONENTS if settings.keep_lemmatizer else NER_COMPONENTS
        self._exclude = [c for c in UNNEEDED if c not in keep]
        nlp = spacy.load(name, exclude=self._exclude)
        self.nlp = nlp
        self.scanned = 0  # texts since the pipeline was (re)loaded
        self.renewals = 0
        lemmas = "lemmatizer" in nlp.pipe_names

        class _Engine(SpacyNlpEngine):
            """Lower-cased words stand in for lemmas when the lemmatizer is excluded."""

            def _doc_to_nlp_artifact(self, doc: Any, language: str) -> Any:
                art = super()._doc_to_nlp_artifact(doc, language)
                if not lemmas:
                    art.lemmas = [t.lower_ for t in doc]
                    # Presidio built the keywords from the empty lemmas before: again, from these words
                    art.keywords = art.set_keywords(self, art.lemmas, language)
                art.keywords = _Keywords(art.keywords)
                return art

        ner_conf = NerModelConfiguration(labels_to_ignore=["CARDINAL", "ORDINAL", "QUANTITY", "MONEY",
                                                           "PERCENT", "LANGUAGE", "LAW", "WORK_OF_ART",
                                                           "PRODUCT", "EVENT", "FAC"])
        nlp_engine = _Engine(models=[{"lang_code": settings.language, "model_name": name}],
                             ner_model_configuration=ner_conf)
        nlp_engine.nlp = {settings.language: nlp}  # type: ignore[assignment]
        registry = RecognizerRegistry(supported_languages=[settings.language])
        presidio_log = logging.getLogger("presidio-analyzer")
        level = presidio_log.level
        presidio_log.setLevel(logging.ERROR)  # one warning per recognizer of another language: noise
        try:
            registry.load_predefined_recognizers(languages=[settings.language], nlp_engine=nlp_engine,
                                                 countries=list(settings.countries))
        finally:
            presidio_log.setLevel(level)
        for rec in country_recognizers(settings.countries, settings.language,
                                       {type(r).__name__ for r in registry.recognizers}):
            registry.add_recognizer(rec)
        # Ours replace these two: e-mail whatever the TLD; phones by format and context words (Presidio's
        # phonenumbers-based matcher cost ~12% of analysis time and found nothing more on the evaluation sets).
        registry.remove_recognizer("EmailRecognizer")
        registry.remove_recognizer("PhoneRecognizer")
        for rec in builtin_recognizers(settings.countries):
            registry.add_recognizer(rec)
        for rec in custom_recognizers(settings.custom_recognizers, origin="pii_engine.custom_recognizers"):
            registry.add_recognizer(rec)
        for rec in custom_recognizers(custom, origin="policy pii.custom_recognizers"):
            registry.add_recognizer(rec)
        self._nlp_engine = nlp_engine
        self.analyzer = AnalyzerEngine(registry=registry, nlp_engine=nlp_engine,
                                       supported_languages=[settings.language],
                                       default_score_threshold=settings.score_threshold)
        self.supported = frozenset(self.analyzer.get_supported_entities(language=settings.language))
        self.identity = model_identity(nlp, name)
        self.identity.update({
            "components": list(nlp.pipe_names),
            "presidio": _version("presidio-analyzer"),
            "recognizers": len(list(registry.recognizers)),
        })
        self._lock = threading.Lock()
        log.info("pii engine ready", extra={"pii_model": self.identity["model"],
                                            "pii_model_version": self.identity["version"],
                                            "pii_model_sha256": self.identity["sha256"],
                                            "pii_components": self.identity["components"]})

    def describe(self) -> dict[str, Any]:
        return dict(self.identity)

    def analyze_many(self, texts: Sequence[str], entities: Iterable[str] | None = None) -> list[list[Span]]:
        """Detect spans in every text with ONE pass of the NLP pipeline; spans are merged per text."""
        if not texts:
            return []
        wanted = sorted(set(entities) & self.supported) if entities is not None else None
        if wanted is not None and not wanted:
            return [[] for _ in texts]
        lang = self.settings.language
        threshold = self.settings.score_threshold
        out: list[list[Span]] = []
        # One detection at a time per process: spaCy pipelines are not documented as thread-safe, and CPU-bound
        # threads would not run in parallel under the GIL anyway (``mlguard redact --workers`` uses processes).
        with self._lock:
            renew = self.settings.renew_after
            if renew and self.scanned >= renew:
                self._renew_locked()
            self.scanned += len(texts)
            return self._analyze_locked(texts, wanted, lang, threshold, out)

    def _renew_locked(self) -> None:
        """Reload the spaCy pipeline (module docstring: why), the old one released before the new one loads.

        Called with the lock held, so no detection runs on either pipeline meanwhile. A failed reload is
        logged and retried after another ``renew_after`` texts; detection goes on with a pipeline loaded
        from the same installed package, so nothing is lost but memory."""
        import spacy

        lang = self.settings.language
        try:
            self.nlp = None  # type: ignore[assignment]
            self._nlp_engine.nlp = {}  # type: ignore[assignment]
            _release_freed_memory()
            self.nlp = spacy.load(self.settings.spacy_model, exclude=self._exclude)
        except Exception as exc:
            log.error("pii pipeline reload failed", extra={"error": type(exc).__name__})
            if self.nlp is None:  # the old one is gone: load it again, as at start-up
                self.nlp = spacy.load(self.settings.spacy_model, exclude=self._exclude)
        self._nlp_engine.nlp = {lang: self.nlp}  # type: ignore[assignment]
        if gc.get_freeze_count():  # the Guard froze the engines it built (runtime.py): the new pipeline too
            gc.freeze()
        self.scanned = 0
        self.renewals += 1
        log.info("pii pipeline reloaded", extra={"count": self.renewals})

    def _analyze_locked(self, texts: Sequence[str], wanted: list[str] | None, lang: str, threshold: float,
                        out: list[list[Span]]) -> list[list[Span]]:
        try:
            # One zone per call (a request's texts, or a CLI batch), entered and left under the lock: the zone
            # swaps the shared Vocab's allocator, so no other detection may run while it is open.
            zone = self.nlp.memory_zone() if self.use_memory_zone else contextlib.nullcontext()
            with zone:
                self._detect(texts, wanted, lang, threshold, out)
        except PIIError:
            raise
        except Exception as exc:
            # The foreign message may quote the text: only the class name leaves this function.
            raise PIIError(f"detection engine failed ({type(exc).__name__})") from None
        return out

    def _detect(self, texts: Sequence[str], wanted: list[str] | None, lang: str, threshold: float,
                out: list[list[Span]]) -> None:
        """The spaCy + Presidio pass; only plain ``Span`` values leave it.

        A separate function so that every Doc, NlpArtifacts and RecognizerResult is a local of this frame and
        is released when it returns, that is before the memory zone of the caller frees the strings and
        lexemes those objects point to (touching them afterwards is undefined behaviour in spaCy).
        """
        folded = [fold(t) for t in texts]
        docs = self.nlp.pipe([f for f, _ in folded], batch_size=self.settings.batch_size)
        engine = self._nlp_engine
        for (text, back), doc in zip(folded, docs, strict=True):
            art = engine._doc_to_nlp_artifact(doc, lang)
            results = self.analyzer.analyze(text=text, language=lang, entities=wanted, nlp_artifacts=art,
                                            score_threshold=threshold)
            spans = [Span(str(r.entity_type), int(r.start), int(r.end), float(r.score),
                          str((r.recognition_metadata or {}).get("recognizer_name", "unknown")))
                     for r in results]
            spans = [s for s in spans if _specific(s, text)]
            if back is not None:  # offsets of the folded text -> offsets of the text as it came
                spans = [Span(s.entity, back[s.start], back[s.end - 1] + 1, s.score, s.recognizer) for s in spans
                         if s.end > s.start]
            out.append(merge_spans(spans))


def fold(text: str) -> tuple[str, list[int] | None]:
    """``text`` as the recognizers can read it, and for each of its characters the offset it came from (None:
    ASCII, unchanged).

    Why: the patterns and the NER read ASCII digits, letters and separators, so an identifier written in
    full-width digits (U+FF10-FF19), in Arabic-Indic digits, with a zero-width space or a soft hyphen inside it,
    or with a full-width commercial at (U+FF20) passed through whole (a red-team probe: PANs, IBANs, NI numbers,
    e-mails). Here invisible format characters (Unicode Cf) are dropped, every decimal digit becomes its ASCII
    digit, every space separator a plain space and the rest takes its NFKC compatibility form; spans found in
    the folded text are mapped back, so the characters replaced are the original ones, the invisible ones
    inside included."""
    if text.isascii():
        return text, None
    out: list[str] = []
    back: list[int] = []
    for i, c in enumerate(text):
        if c.isascii():
            out.append(c)
            back.append(i)
            continue
        category = unicodedata.category(c)
        if category == "Cf":
            continue
        if category == "Nd":
            folded = str(unicodedata.digit(c))
        elif category == "Zs":
            folded = " "
        else:
            folded = unicodedata.normalize("NFKC", c) or c
        out.extend(folded)
        back.extend([i] * len(folded))
    return "".join(out), back


class _Keywords(list[str]):
    """Presidio's keyword list with set-speed membership; the same list in every other respect.

    Why: Presidio's context enhancer, for every detected span, walks the lemmas before and after it and asks
    ``lemma in keywords`` at each step, ``keywords`` being a list as long as the text. A text with n tokens and
    k spans cost O(k * n * n): with other jobs on both cores, a 10,000-character note with 200 spans took 3.7 s
    here and a 19,000-character one 24 s, most of it in that ``in``; with this list, 0.6 s and 1.7 s, and every
    span, score and offset identical (a set of strings holds exactly what the list holds). The set is built on
    the first ``in``, after Presidio has finished building the list."""

    __slots__ = ("_members",)
    _members: frozenset[str]

    def __contains__(self, item: object) -> bool:
        try:
            members = self._members
        except AttributeError:
            members = self._members = frozenset(self)
        return item in members


def _release_freed_memory() -> None:
    """Hand memory freed by a released pipeline back to the system (glibc keeps it in its arenas otherwise:
    measured, about 30 MB per reload stays resident without this). A no-op where glibc is absent."""
    import ctypes

    gc.collect()  # pipelines released by reference count already; this catches any cycle left unfrozen
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library the process runs on
    except (OSError, AttributeError):
        return
    trim(0)


_NER = "SpacyRecognizer"
_DATE_WORDS = re.compile(
    r"\d|\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|mon|tue|wed|thu|fri|sat|sun)[a-z]*\b", re.I)


_CODE = re.compile(r"[^\s]*\d[^\s]*")  # one token holding a digit: CLM-7781, A12, 2026-000123
_LONG_NUMBER = re.compile(r"\d{6}")
_NAMED = frozenset({"PERSON", "ORGANIZATION"})
_LABELS = frozenset({  # what forms call an identifier: the small model reads these acronyms as organisations
    "NI", "NINO", "SIN", "IBAN", "BIC", "SWIFT", "SSN", "ITIN", "EIN", "TIN", "VAT", "NHS", "NIF", "NIE", "NIR",
    "PESEL", "DOB", "MRN", "ID", "PAN", "CVV", "CVC", "PIN", "IMEI", "VIN", "IP", "URL", "SMS",
})


def _specific(span: Span, text: str) -> bool:
    """Drop the NER spans that name nothing: dates that are no date, and codes read as names.

    - DATE_TIME with no date in it ("one morning", "the weekend") identifies no one.
    - A single token holding a digit read as a person or an organisation ("CLM-7781" as an ORGANIZATION,
      "CLM-9" as a PERSON), or as a date when it holds six digits in a row ("2026-000123"; five would take ZIP
      codes): a new user's claim ids reached their app as ``<ORGANIZATION>`` in 195 of 228 requests, so answers
      could no longer be matched to claims. Names hold no digits; identifiers that are personal data are found
      by the pattern recognizers, which this does not touch. Places and groups are left alone: the same rule on
      them let more of street addresses and of NRP (often written lower-case) through on bench/pii.py's sets,
      where this one changes neither the leak nor the over-redaction rate.
    - ORGANIZATION on one lower-case word ("iban", "role"), or on an identifier's label ("NI", "SIN", "IBAN",
      "DOB": 4,413 findings in a user's 2,000 support tickets): the small English model's guess.
    - Any name in a value that is one code token as a whole ("TKT-00001" as a LOCATION).
    """
    if span.recognizer != _NER:
        return True
    piece = text[span.start:span.end]
    if span.entity != "DATE_TIME" and _CODE.fullmatch(text.strip()) is not None:
        return False  # the whole value is one code ("TKT-00001" read as a place): an id, not a name
    if span.entity == "ORGANIZATION" and (piece.upper() in _LABELS or (
            piece == text.strip() and piece.isalpha() and piece.isupper() and len(piece) <= 5)):
        return False  # a label, or a value that is one short code ("EUR", "USD", "GOLD"): no one's name
    if span.entity == "DATE_TIME":
        if _CODE.fullmatch(piece) is not None and _LONG_NUMBER.search(piece) is not None:
            return False
        return _DATE_WORDS.search(text, span.start, span.end) is not None
    if span.entity in _NAMED and not any(c.isspace() for c in piece):
        # the whole whitespace-delimited word: "CLM" of "CLM-L120" is a code's part, not an organisation
        start, end = span.start, span.end
        while start > 0 and not text[start - 1].isspace():
            start -= 1
        while end < len(text) and not text[end].isspace():
            end += 1
        if _CODE.fullmatch(text, start, end) is not None:
            return False
    return not (span.entity == "ORGANIZATION" and piece.isalpha() and piece.islower())


_LOOSE_NER = frozenset({"DATE_TIME", "ORGANIZATION", "NRP"})


def merge_spans(spans: list[Span]) -> list[Span]:
    """Union of overlapping spans (nothing partly left in clear); the label of the surest member wins.

    An NER span with a low-precision label (DATE_TIME, ORGANIZATION, NRP) that overlaps a pattern match of
    another entity is dropped first: the pattern knows the format (``IMEI 4901...`` is a device id, not a date).
    """
    if not spans:
        return []
    patterns = [s for s in spans if s.recognizer != _NER]
    spans = [s for s in spans if s.recognizer != _NER or s.entity not in _LOOSE_NER
             or not any(p.start < s.end and s.start < p.end and p.entity != s.entity for p in patterns)]
    spans = sorted(spans, key=lambda s: (s.start, -s.end))
    merged: list[Span] = []
    for s in spans:
        if merged and s.start < merged[-1].end:
            last = merged[-1]
            best = last if _rank(last) >= _rank(s) else s
            merged[-1] = Span(best.entity, last.start, max(last.end, s.end), max(last.score, s.score),
                              best.recognizer)
        else:
            merged.append(s)
    return merged


def _rank(s: Span) -> tuple[bool, float, bool, int]:
    """Label choice on overlap: a pattern recognizer (knows the format) beats NER, then score, then mlguard's
    context-anchored recognizers (``IMEI 4901...`` is a device id even though it passes Luhn), then length."""
    return (s.recognizer != _NER, s.score, s.recognizer.startswith("MLGuard"), s.end - s.start)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


_ENGINES: dict[str, PIIEngine] = {}
_ENGINES_LOCK = threading.Lock()


def get_engine(settings: PIIEngineSettings, custom: Sequence[Mapping[str, Any]] = ()) -> PIIEngine:
    """The process-wide engine for these settings and custom recognizers (built on first request)."""
    import json

    # Only what shapes the engine: a different vault path or cache size reuses the loaded model.
    shape = settings.model_dump(include={"spacy_model", "language", "score_threshold", "keep_lemmatizer",
                                         "countries", "batch_size", "custom_recognizers"})
    key = json.dumps([shape, list(custom)], sort_keys=True, default=str)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = PIIEngine(settings, custom=custom)
            _ENGINES[key] = engine
        return engine
