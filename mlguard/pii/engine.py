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
import dataclasses
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
        readings = [read(t) for t in texts]
        docs = self.nlp.pipe([r.text for r in readings], batch_size=self.settings.batch_size)
        engine = self._nlp_engine
        for reading, doc in zip(readings, docs, strict=True):
            text = reading.text
            art = engine._doc_to_nlp_artifact(doc, lang)
            results = self.analyzer.analyze(text=text, language=lang, entities=wanted, nlp_artifacts=art,
                                            score_threshold=threshold)
            spans = [Span(str(r.entity_type), int(r.start), int(r.end), float(r.score),
                          str((r.recognition_metadata or {}).get("recognizer_name", "unknown")))
                     for r in results]
            spans = [s for s in spans if _specific(s, text)]
            if reading.starts is not None:  # offsets of the text read -> offsets of the text as it came
                starts, ends = reading.starts, reading.ends
                spans = [Span(s.entity, starts[s.start], ends[s.end - 1], s.score, s.recognizer) for s in spans
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
    inside included. Cyrillic and Greek look-alikes inside Latin words, and dot-like marks between ASCII
    letters, are read as Latin letters and full stops (``_unconfuse``)."""
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
    return _unconfuse("".join(out)), back


# Cyrillic and Greek letters drawn like a Latin one (the common entries of Unicode's confusables.txt, UTS #39).
_CONFUSABLE: dict[str, str] = {
    # Cyrillic small, read as aeopcyxsijhdqwl
    **dict(zip("\u0430\u0435\u043e\u0440\u0441\u0443\u0445\u0455"
               "\u0456\u0458\u04bb\u0501\u051b\u051d\u04cf", "aeopcyxsijhdqwl", strict=True)),
    # Cyrillic capital, read as ABEKMHOPCTXYYSIJQW
    **dict(zip("\u0410\u0412\u0415\u041a\u041c\u041d\u041e\u0420"
               "\u0421\u0422\u0425\u0423\u04ae\u0405\u0406\u0408"
               "\u051a\u051c", "ABEKMHOPCTXYYSIJQW", strict=True)),
    # Greek capital, read as ABEZHIKMNOPTYX
    **dict(zip("\u0391\u0392\u0395\u0396\u0397\u0399\u039a\u039c"
               "\u039d\u039f\u03a1\u03a4\u03a5\u03a7", "ABEZHIKMNOPTYX", strict=True)),
    # Greek small, read as oaikvpuxcj
    **dict(zip("\u03bf\u03b1\u03b9\u03ba\u03bd\u03c1\u03c5\u03c7"
               "\u03f2\u03f3", "oaikvpuxcj", strict=True)),
}
# The ideographic full stop, the middle dot, the hyphenation point and the katakana middle dot.
_DOTS = frozenset("\u3002\u00b7\u2027\u30fb")
_LETTER_RUN = re.compile(r"[^\W\d_]+")


def _unconfuse(text: str) -> str:
    """``text`` with each word that reads as Latin written in Latin letters, and dot-like marks between two
    ASCII letters or digits written as a full stop; one character for one, so offsets are unchanged.

    Why: a Cyrillic or Greek "a", "e" or "o" inside a Latin word looks the same to a person and not to the
    patterns or the NER (a red-team probe: "221B Baker Street" and "42 Market Street" with Cyrillic vowels passed
    as no address, "Maria Lopez" in Cyrillic look-alikes was read as an organisation, "example\u3002com"
    as a URL, not an e-mail). A word is rewritten only when every letter of it is Latin or one of these
    look-alikes, so words of Russian or Greek (which hold letters with no Latin twin) are read as they are;
    the characters redacted are always the original ones."""
    if _CONFUSABLE.keys().isdisjoint(text) and _DOTS.isdisjoint(text):
        return text
    chars = list(text)
    for m in _LETTER_RUN.finditer(text):
        word = m.group()
        if any(c in _CONFUSABLE for c in word) and all(c.isascii() or c in _CONFUSABLE for c in word):
            chars[m.start():m.end()] = [_CONFUSABLE.get(c, c) for c in word]
    last = len(chars) - 1
    for i, c in enumerate(chars):
        if c in _DOTS and 0 < i < last and _ascii_alnum(chars[i - 1]) and _ascii_alnum(chars[i + 1]):
            chars[i] = "."
    return "".join(chars)


def _ascii_alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


@dataclass(frozen=True, slots=True)
class Reading:
    """A text as the recognizers read it, and where each of its characters came from in the text as it came:
    the character ``i`` of ``text`` stands for ``original[starts[i]:ends[i]]`` (``starts`` None: the same)."""

    text: str
    starts: list[int] | None = None
    ends: list[int] = dataclasses.field(default_factory=list)


def read(text: str) -> Reading:
    """``text`` decoded (``&#52;``, ``%40``), its spelled digits read as digits and then folded (``fold``), with
    the offsets that map spans found in it back to ``text``.

    Why the decoding steps: each stands for a character sequence the recognizers could not read, found by a
    red-team probe: PANs written as HTML character references ("&#52;&#49;..."), e-mails and streets sent
    percent-encoded ("jane%2Edoe%40example%2Ecom", "221B%20Baker%20Street"), card, phone and social security
    numbers spelled out ("four one one one ..."). Unlike ``fold`` one character read may stand for several of
    the original (a whole ``&#x34;``, ``%40`` or "four"), so both ends of each character are kept."""
    cur, starts, ends = text, None, None
    for step in (_decode_escapes, _spelled_digits):
        done = step(cur)
        if done is not None:
            cur, starts, ends = done[0], *_compose(starts, ends, done[1], done[2])
    folded, back = fold(cur)
    if back is not None:
        cur, (starts, ends) = folded, _compose(starts, ends, back, [b + 1 for b in back])
    if starts is None or ends is None:
        return Reading(cur)
    return Reading(cur, starts, ends)


def _compose(starts: list[int] | None, ends: list[int] | None, step_starts: list[int], step_ends: list[int]
             ) -> tuple[list[int], list[int]]:
    """Offsets of a step's output in the original text, given the step's offsets in its own input."""
    if starts is None or ends is None:
        return step_starts, step_ends
    return [starts[i] for i in step_starts], [ends[j - 1] for j in step_ends]


class _Rewrite:
    """A text being rewritten piece by piece, with the source range of every character written."""

    __slots__ = ("ends", "out", "pos", "source", "starts")

    def __init__(self, source: str) -> None:
        self.source, self.pos = source, 0
        self.out: list[str] = []
        self.starts: list[int] = []
        self.ends: list[int] = []

    def copy_to(self, end: int) -> None:
        """The source as it is, from where the last piece ended to ``end``."""
        self.out.append(self.source[self.pos:end])
        self.starts.extend(range(self.pos, end))
        self.ends.extend(range(self.pos + 1, end + 1))
        self.pos = max(self.pos, end)

    def put(self, chars: str, start: int, end: int) -> None:
        """``chars`` in place of ``source[start:end]`` (each standing for the whole range)."""
        self.copy_to(start)
        self.out.append(chars)
        self.starts.extend([start] * len(chars))
        self.ends.extend([end] * len(chars))
        self.pos = end

    def result(self) -> tuple[str, list[int], list[int]]:
        self.copy_to(len(self.source))
        return "".join(self.out), self.starts, self.ends


_ESCAPE = re.compile(r"&#(?:[xX](?P<hex>[0-9a-fA-F]{1,6})|(?P<dec>[0-9]{1,7}));|(?P<pct>(?:%[0-9a-fA-F]{2})+)")


def _decode_escapes(text: str) -> tuple[str, list[int], list[int]] | None:
    """Numeric character references (``&#64;``, ``&#x40;``) and percent-escapes (``%40``, ``%C3%A9`` as UTF-8)
    decoded, or None when the text holds neither. A reference to no character, or to a control character other
    than a tab or line break, and bytes that are no UTF-8, are left as written."""
    if "&#" not in text and "%" not in text:
        return None
    rw: _Rewrite | None = None
    for m in _ESCAPE.finditer(text):
        if m.group("pct") is None:
            code = int(m.group("hex"), 16) if m.group("hex") is not None else int(m.group("dec"))
            if _readable(code):
                rw = rw or _Rewrite(text)
                rw.put(chr(code), m.start(), m.end())
            continue
        raw = bytes.fromhex(m.group("pct").replace("%", ""))
        i = 0
        while i < len(raw):
            size = _utf8_size(raw[i])
            try:
                char = raw[i:i + size].decode("utf-8") if size else ""
            except UnicodeDecodeError:
                char = ""
            if len(char) == 1 and _readable(ord(char)):
                rw = rw or _Rewrite(text)
                rw.put(char, m.start() + 3 * i, m.start() + 3 * (i + size))
                i += size
            else:
                i += 1
    return rw.result() if rw is not None else None


def _readable(code: int) -> bool:
    return (code >= 0x20 or code in (0x09, 0x0A, 0x0D)) and code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF


def _utf8_size(lead: int) -> int:
    """Bytes of the UTF-8 sequence that ``lead`` starts (0: not a lead byte)."""
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


_DIGIT_NAMES = {"zero": "0", "oh": "0", "nought": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9"}
_SPELLED = r"(?:(?:double|triple)[ \t]+)?(?:" + "|".join(_DIGIT_NAMES) + r")\b"
_SPELLED_SEP = r"(?:[ \t]*[,\u2013\u2014-][ \t]*|[ \t]+)"
_SPELLED_RUN = re.compile(rf"\b{_SPELLED}(?:{_SPELLED_SEP}{_SPELLED}){{2,}}", re.IGNORECASE)
_SPELLED_PART = re.compile(rf"(?:(?P<times>double|triple)[ \t]+)?(?P<digit>{'|'.join(_DIGIT_NAMES)})\b"
                           rf"|(?P<sep>{_SPELLED_SEP})", re.IGNORECASE)
SPELLED_DIGITS_MIN = 7
"""Digits a run of spelled-out digits needs to be read as a number: a telephone number without its area code
has seven; prose does not name seven digits in a row ("one or two", "three, two, one" are shorter)."""


def _spelled_digits(text: str) -> tuple[str, list[int], list[int]] | None:
    """Runs of at least ``SPELLED_DIGITS_MIN`` spelled-out digits ("four one one one", "five five five, one
    two three four", "double five", "oh" for a zero) written as digits: words joined by spaces become one
    group, a comma or dash between them a hyphen, so "five five five, one two three four" reads "555-1234"."""
    rw: _Rewrite | None = None
    for m in _SPELLED_RUN.finditer(text):
        parts = list(_SPELLED_PART.finditer(text, m.start(), m.end()))
        digits = [p for p in parts if p.group("digit") is not None]
        count = sum({"double": 2, "triple": 3}.get((p.group("times") or "").lower(), 1) for p in digits)
        if count < SPELLED_DIGITS_MIN or all(p.group("digit").lower() == "oh" for p in digits):
            continue
        rw = rw or _Rewrite(text)
        for p in parts:
            if p.group("digit") is not None:
                times = {"double": 2, "triple": 3}.get((p.group("times") or "").lower(), 1)
                rw.put(_DIGIT_NAMES[p.group("digit").lower()] * times, p.start(), p.end())
            elif p.group("sep").strip():
                rw.put("-", p.start(), p.end())
            else:
                rw.put("", p.start(), p.end())
    return rw.result() if rw is not None else None


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
# Words that name a thing by its number, never a person or a date: "Order #12345", "bug 4111", "page 12",
# "flight 2041". Not the numbers that point at a person (account, case, claim, customer, member, patient, policy):
# those are left to the recognizers that look for them.
_THINGS = (
    "order|invoice|ticket|bug|issue|incident|item|sku|part|model|page|pages|step|version|release|build|line|row|"
    "column|table|chapter|section|paragraph|clause|article|figure|fig|task|job|batch|lot|pr|commit|test|error|"
    "room|floor|gate|flight|train|bus|platform|track|seat|channel|level|episode|season|round|lane|exit|slide"
)
_THING_NUMBER = re.compile(rf"(?:\b(?i:{_THINGS})\.?[ \t]*(?:#|(?i:no\.|nr\.|number))?|#)[ \t]*\Z")
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
    - DATE_TIME on a bare number that a word before it says is the number of a thing ("Order #12345", "bug
      4111", "page 12": ``_THINGS``), or that follows "#": the small model reads many short numbers as dates,
      so the red-team probe's "Order #12345" and "See bug 4111" reached the app as ``<DATE_TIME>``. A bare number
      after any other word stays a date: the numbers closing an address block ("Estonia 62488") and ages
      ("when he was 78") are found only this way on bench/pii.py's sets.
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
        if piece.isdigit() and _THING_NUMBER.search(text, max(0, span.start - 32), span.start) is not None:
            return False  # a number named by what it numbers ("Order #12345", "bug 4111"): no date
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
