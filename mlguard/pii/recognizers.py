"""Recognizers Presidio lacks, and the policy/config-declared custom ones.

Why our own recognizer class: several identifiers (medical record, health plan and account numbers, device ids)
are only personal data *next to* a context word ("MRN 00123"), so the pattern must see the context but redact
only the value; Presidio's PatternRecognizer redacts the whole match. ``RegexRecognizer`` takes compiled
patterns with an optional ``value`` group, an optional validator and context words (which Presidio's context
enhancer also reads). Patterns are compiled once, here, at engine build time.

This module imports presidio: import it only from :mod:`mlguard.pii.engine`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from presidio_analyzer import EntityRecognizer, RecognizerResult

from mlguard.errors import ConfigError

Validator = Callable[[str], bool]

_I = re.IGNORECASE
CONTEXT_BOOST = 0.35
CONTEXT_MIN = 0.4


@dataclass(frozen=True, slots=True)
class Rx:
    """One compiled pattern: its score, and the group holding the value (0 = whole match)."""

    regex: re.Pattern[str]
    score: float
    group: int | str = 0
    name: str = "pattern"


class RegexRecognizer(EntityRecognizer):
    """A pattern recognizer that can redact one group of the match and validate the value."""

    def __init__(self, entity: str, patterns: Sequence[Rx], *, name: str, context: Sequence[str] = (),
                 validator: Validator | None = None, invalid_score: float = 0.0, window: tuple[int, int] = (48, 24)
                 ) -> None:
        self._patterns = list(patterns)
        self._validator = validator
        self._invalid_score = invalid_score
        self._rname = name
        self._window = window
        # Our own context check (a word within a few characters of the match) instead of Presidio's lemma-based
        # enhancer: it works the same with or without spaCy's lemmatizer and costs one regex search.
        self._context = (re.compile(r"\b(?:" + "|".join(re.escape(w) for w in context) + r")\b", _I)
                         if context else None)
        super().__init__(supported_entities=[entity], name=name, supported_language="en", context=[])

    def _boost(self, text: str, start: int, end: int, score: float) -> float:
        if self._context is None:
            return score
        before, after = self._window
        if self._context.search(text, max(0, start - before), start) or self._context.search(text, end,
                                                                                              end + after):
            return min(1.0, max(score + CONTEXT_BOOST, CONTEXT_MIN))
        return score

    def load(self) -> None:
        return None

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        entity = self.supported_entities[0]
        if entities and entity not in entities:
            return []
        out: list[Any] = []
        for rx in self._patterns:
            for m in rx.regex.finditer(text):
                try:
                    start, end = m.span(rx.group)
                except IndexError:
                    start, end = m.span()
                if start < 0 or end <= start:
                    continue
                score = rx.score
                if self._validator is not None and not self._validator(text[start:end]):
                    score = self._invalid_score
                    if score <= 0.0:
                        continue
                score = self._boost(text, start, end, score)
                out.append(RecognizerResult(
                    entity_type=entity, start=start, end=end, score=score,
                    recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self._rname,
                                          RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id},
                ))
        return out


# ---------------------------------------------------------------------------------------------- validators


def luhn(value: str) -> bool:
    """Luhn checksum over the digits of ``value`` (cards, IMEI)."""
    digits = [int(c) for c in value if c.isdigit()]
    if len(digits) < 2:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


_VIN_MAP = {**{str(i): i for i in range(10)},
            **dict(zip("ABCDEFGH", range(1, 9), strict=True)), **dict(zip("JKLMN", range(1, 6), strict=True)),
            "P": 7, "R": 9, **dict(zip("STUVWXYZ", range(2, 10), strict=True))}
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)


def vin_check(value: str) -> bool:
    """ISO 3779 / North-American check digit (position 9) of a 17-character VIN."""
    v = value.upper()
    if len(v) != 17 or any(c not in _VIN_MAP for c in v):
        return False
    total = sum(_VIN_MAP[c] * w for c, w in zip(v, _VIN_WEIGHTS, strict=True))
    check = total % 11
    return v[8] == ("X" if check == 10 else str(check))


def has_letter_and_digit(value: str) -> bool:
    return any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


def digits_at_least_6(value: str) -> bool:
    return sum(c.isdigit() for c in value) >= 6


def email_tld(value: str) -> bool:
    """Any alphabetic top-level domain of 2..63 letters (``.example``, ``.internal`` and ``.corp`` included)."""
    tld = value.rsplit(".", 1)[-1]
    return 2 <= len(tld) <= 63 and tld.isalpha()


VALIDATORS: dict[str, Validator] = {
    "luhn": luhn,
    "vin": vin_check,
    "letter_and_digit": has_letter_and_digit,
    "digits6": digits_at_least_6,
}
"""Validators a policy or config may name for a custom recognizer."""


# ---------------------------------------------------------------------------------------------- built-ins

_STREET_TYPES = (  # USPS Publication 28, appendix C1: street suffixes and their common abbreviations
    r"alley|aly|annex|anx|arcade|arc|avenue|ave|av|bayou|byu|beach|bch|bend|bnd|bluffs?|blfs?|bottom|btm|"
    r"boulevard|blvd|branch|br|bridge|brg|brooks?|brks?|burgs?|bgs?|bypass|byp|camp|cp|canyon|cyn|cape|cpe|"
    r"causeway|cswy|centers?|ctrs?|ctr|circles?|cirs?|cliffs?|clfs?|club|clb|commons?|cmns?|corners?|cors?|"
    r"course|crse|courts?|cts?|coves?|cvs?|creek|crk|crescent|cres|crest|crst|crossing|xing|crossroads?|xrds?|"
    r"curve|curv|dale|dl|dam|dm|divide|dv|drives?|drs?|estates?|ests?|expressway|expy|extensions?|exts?|"
    r"falls?|fls?|ferry|fry|fields?|flds?|flats?|flts?|fords?|frds?|forest|frst|forges?|frgs?|forks?|frks?|"
    r"fort|ft|freeway|fwy|gardens?|gdns?|gateway|gtwy|glens?|glns?|greens?|grns?|groves?|grvs?|harbors?|hbrs?|"
    r"haven|hvn|heights|hts|highway|hwy|hills?|hls?|hollow|holw|inlet|inlt|islands?|iss?|isle|junctions?|jcts?|"
    r"keys?|kys?|knolls?|knls?|lakes?|lks?|land|landing|lndg|lane|ln|lights?|lgts?|loaf|lf|locks?|lcks?|"
    r"lodge|ldg|loop|mall|manors?|mnrs?|meadows?|mdws?|mews|mills?|mls?|mission|msn|motorway|mtwy|mount|mt|"
    r"mountains?|mtns?|neck|nck|orchard|orch|oval|overpass|opas|parks?|parkways?|pkwys?|pkwy|pass|passage|"
    r"psge|path|pike|pines?|pnes?|place|pl|plains?|plns?|plaza|plz|points?|pts?|ports?|prts?|prairie|pr|"
    r"radial|radl|ramp|ranch|rnch|rapids?|rpds?|rest|rst|ridges?|rdgs?|river|riv|roads?|rds?|route|rte|row|"
    r"rue|run|shoals?|shls?|shores?|shrs?|skyway|skwy|springs?|spgs?|spurs?|squares?|sqs?|sq|station|sta|"
    r"stravenue|stra|stream|strm|streets?|sts?|summit|smt|terrace|ter|throughway|trwy|trace|trce|track|trak|"
    r"trafficway|trfy|trail|trl|trailer|trlr|tunnel|tunl|turnpike|tpke|underpass|upas|unions?|uns?|"
    r"valleys?|vlys?|viaduct|via|views?|vws?|villages?|vlgs?|ville|vl|vista|vis|walks?|wall|ways?|wy|wells?|wls?|"
    r"close|gate|wynd|quay|esplanade|promenade"
)
_UNIT = (r"(?:apt\.?|apartment|flat|suite|ste\.?|unit|room|rm\.?|floor|fl\.?|bldg\.?|building)\s*#?\s*"
         r"(?=[\w-]{0,6}\d)[\w-]{1,8}")
_STATES = (
    r"AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|"
    r"ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR|GU|VI|AA|AE|AP"
)
_WORD = r"[^\W\d_][\w'.-]*"
_WORD_OR_NUM = r"(?:[^\W_][\w'.-]*)"
# Foreign street words that carry the street type inside them or before them (rua, calle, ul., -strasse, ...).
_FOREIGN_PREFIX = (
    r"rua|avenida|avda\.?|av\.|calle|c/|via|viale|piazza|corso|rue|boulevard|chemin|place|allée|ul\.|ulica|"
    r"al\.|aleja|str\.|strada|cesta|trg|ulitsa|ulica|praça|travessa|largo|plaza|paseo|camino|carrer|rambla|"
    r"λ\.|οδός|leof\.|odos"
)
_FOREIGN_SUFFIX = (
    r"stra(?:ss|ß)e|str\.|weg|gasse|allee|platz|ring|damm|ufer|vägen|gatan|gata|veien|vegen|gade|vej|"
    r"stræde|katu|tie|kuja|polku|väylä|utca|út|straat|laan|gracht|plein|kade|dijk|braut|gata|stígur|"
    r"vegur|götu|ulica|iela|gatve|tänav|street|road"
)
_ZIP_US = r"\d{5}(?:-\d{4})?"
# A house number is never the tail of a date or time: without this, "2026-10-11 to 42 Wallaby Way" became an
# address from "11", the date was never found as a date and its month and year were left in clear.
_NOT_IN_DATE = r"(?<!\d[-/.:\u2013])"
# Words that join a number to a later one in running text but are never part of a street name: "in 2026 to
# 42 Main Street" starts at 42, "11 to 15" and "from 9 to 5 at the office" are no addresses. Not "and" nor
# "or" ("12 and 14 Main Street" is one address), nor "in"/"on"/"by"/"for": with them bench/pii.py leaked
# ZIP codes ("Acquapendente 1021 in its mission") that only a wrong street match had covered.
_CONNECTOR = r"(?i:to|at|from|since|until|till|through|thru)(?![\w'.-])"
_STREET_NAME_WORD = rf"(?!{_CONNECTOR}){_WORD_OR_NUM}"

_US_STREET = re.compile(
    rf"{_NOT_IN_DATE}\b\d{{1,6}}[A-Za-z]?(?:\s+(?:[NSEW]|north|south|east|west|N\.?E\.?|N\.?W\.?|S\.?E\.?|S\.?W\.?)\.?)?"
    rf"(?:\s+{_STREET_NAME_WORD}){{1,4}}?\s+(?:{_STREET_TYPES})\b\.?"
    rf"(?:[ \t]+(?:[NSEW]|NE|NW|SE|SW|north|south|east|west)\b\.?)?"
    rf"(?:,?\s+{_UNIT})?"
    rf"(?:,?\s+(?:{_WORD}[ \t]+){{0,3}}{_WORD},?\s+(?:{_STATES})\.?\s+{_ZIP_US})?",
    _I,
)
_PO_BOX = re.compile(r"\b(?:p\.?\s?o\.?\s?box|post\s?box|postbox|post office box|box)\s+#?\d{1,8}\b", _I)
_MILITARY = re.compile(
    r"\b(?:(?:PSC|CMR|Unit)\s+\d{1,5},?\s+Box\s+\d{1,5}|USNS\s+\w+|USS\s+\w+|USNV\s+\w+|USCGC\s+\w+)"
    r"(?:,?\s+(?:APO|FPO|DPO)\s+(?:AA|AE|AP)\s+\d{5})?",
    _I,
)
_APO = re.compile(r"\b(?:APO|FPO|DPO)\s+(?:AA|AE|AP)\s+\d{5}\b", _I)
_FOREIGN_STREET = re.compile(
    rf"(?:{_NOT_IN_DATE}\b\d{{1,6}}\s+)?(?:(?<!\w)(?:{_FOREIGN_PREFIX})\s+(?:{_WORD_OR_NUM}\s+){{0,4}}?{_WORD}"
    rf"|\b[^\W\d_]{{3,}}(?:{_FOREIGN_SUFFIX}))\.?,?\s+\d{{1,5}}[a-zA-Z]?\b\.?(?:,?\s+{_UNIT})?",
    _I,
)
_CITY_STATE_ZIP = re.compile(rf"\b(?:{_WORD}[ \t]+){{0,2}}{_WORD},[ \t]*(?:{_STATES})[ \t]+{_ZIP_US}\b")
# A unit with no street beside it: an apartment, suite or unit number is part of an address; a room, floor or
# building number alone names a place in an office, a hotel or a school ("Room 4", "Floor 2") and was redacted
# as an address (red-team probe): those count only inside an address block. "Flat 3" alone counts next to an
# address word ("lives in flat 3"), as "a flat 5% fee" is no flat.
_UNIT_ID = r"\s*#?\s*(?=[\w-]{0,6}\d)[\w-]{1,8}\b"
_HOME_ALONE = re.compile(rf"(?<!\w)(?:apt\.?|apartment|suite|ste\.?|unit){_UNIT_ID}", _I)
_FLAT_ALONE = re.compile(rf"(?<!\w)flat{_UNIT_ID}", _I)
# A unit written before its street line, as British and Irish addresses do ("Flat 3, 221B Baker Street"): it is
# part of the address, yet was left in clear when the street line was found.
_UNIT_BEFORE = re.compile(rf"(?<!\w)(?i:{_UNIT})[ \t]*,?[ \t]*\Z")
_CORNER = re.compile(
    rf"\bthe[ \t]+corner[ \t]+of[ \t]+(?:{_WORD_OR_NUM}[ \t]+){{1,5}}?and(?:[ \t]+{_WORD_OR_NUM}){{1,3}}", _I)
# A postal code of the United Kingdom ("NW1 6XE", "SW1A 1AA"): the block "221B Baker Street, London NW1 6XE"
# ended before it, so the code was left in clear after its city.
_UK_POSTCODE = r"[A-Z]{1,2}\d[A-Z\d]?[ \t]?\d[A-Z]{2}\b"
# What may follow a street line in an address block: a unit, a city or country (perhaps with a ZIP), a state
# and ZIP, a UK postcode, each after a line break or a comma and ending its line or clause.
_CONT_SEG = (
    rf"(?:(?:[^\W\d_][^\W\d_'\u2019-]*[ \t]+){{0,3}}{_UK_POSTCODE}"  # a postcode ends its clause by itself
    rf"|(?:(?i:{_UNIT})"
    r"|(?:[A-Z]{2,3}[ \t]+)?\d{4,6}(?:-\d{3,4})?"
    r"|[^\W\d_][^\W\d_'\u2019-]*(?:[ \t]+(?:[^\W\d_][^\W\d_'\u2019.-]*|\([^\n)]{1,30}\))){0,3}"
    r"(?:[ \t]+\d{4,6}(?:-\d{3,4})?)?)(?=[ \t]*(?:\n|,|\.?$|\.[ \t])))"
)
_CONTINUATION = re.compile(rf"(?:[ \t]*(?:\n[ \t>?]*(?:,[ \t]*)?|,[ \t]*(?=[A-Z\d])){_CONT_SEG}){{1,5}}", re.M)

_ZIP_CONTEXT = re.compile(
    r"\b(?:zip(?:\s?code)?|postal\s?code|post\s?code|postcode|zipcode|plz)\b(?:\s+(?:is|was))?\W{0,3}"
    r"(?P<value>\d{5}(?:-\d{4})?|\d{3}\s?\d{2}|\d{4}(?:\s?[A-Z]{2})?|\d{2}-\d{3}|\d{4}-\d{3}|"
    r"[A-Z]\d[A-Z]\s?\d[A-Z]\d|[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2})\b",
    _I,
)
_ZIP_AFTER_STATE = re.compile(rf"\b(?:{_STATES}),?[ \t]+(?P<value>{_ZIP_US})\b")
_ZIP_PLUS4 = re.compile(r"\b\d{5}-\d{4}\b")

_DOB = re.compile(
    r"\b(?:d\.?o\.?b\.?|date\s+of\s+birth|birth\s?date|birthday|born(?:\s+on|\s+in)?)\b[\s:,-]{0,4}"
    r"(?P<value>\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}"
    r"|(?:\d{1,2}(?:st|nd|rd|th)?\s+)?(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
    r"(?:\s+\d{1,2}(?:st|nd|rd|th)?)?,?\s+\d{4}|\d{4})\b",
    _I,
)

# The label may be joined to the value by a hyphen as well ("MRN-99887766", how many EHRs print it), and by
# "#:" or ":#". Only the value is redacted; the validator (a digit somewhere) keeps "MRN-positive" and
# "MRN pending" out.
_MRN = re.compile(
    r"\b(?:mrn|medical\s+record(?:\s+(?:number|no\.?|num|#))?|patient\s+(?:id|number|no\.?)|chart\s+(?:number|no\.?))"
    r"\s*(?:is|[:#=-]{1,2})?\s*(?P<value>[A-Z0-9][A-Z0-9-]{3,19})\b",
    _I,
)
_HEALTH_PLAN = re.compile(
    r"\b(?:health\s+plan(?:\s+(?:beneficiary\s+)?(?:number|no\.?|id))?|member\s+(?:id|number|no\.?)|"
    r"insurance\s+(?:id|number|no\.?)|policy\s+(?:number|no\.?)|subscriber\s+(?:id|number)|"
    r"medicare\s+(?:number|id)|medicaid\s+(?:number|id)|beneficiary\s+(?:id|number))"
    r"\s*(?:is|[:#=-]{1,2})?\s*(?P<value>[A-Z0-9][A-Z0-9-]{4,19})\b",
    _I,
)
_ACCOUNT = re.compile(
    r"\b(?:account|acct\.?|a/c|acc\.?)\s*(?:number|no\.?|num|#)?\s*(?:is|[:#=-]{1,2})?\s*"
    r"(?P<value>\d[\d -]{4,22}\d)\b",
    _I,
)
_VIN = re.compile(r"\b[A-HJ-NPR-Z0-9]{17}\b", _I)
_VIN_CONTEXT = re.compile(r"\b(?:vin|vehicle\s+identification\s+number|chassis\s+(?:number|no\.?))"
                          r"\s*(?:is|:|#)?\s*(?P<value>[A-HJ-NPR-Z0-9]{11,17})\b", _I)
_PLATE = re.compile(r"\b(?:licen[cs]e\s+plate|plate\s+(?:number|no\.?)|registration\s+(?:number|no\.?))"
                    r"\s*(?:is|:|#)?\s*(?P<value>[A-Z0-9][A-Z0-9 -]{1,8}[A-Z0-9])\b", _I)
_IMEI = re.compile(r"\b(?:imei|meid|esn)\s*(?:number|no\.?)?\s*(?:is|:|#)?\s*(?P<value>\d[\d -]{13,17}\d)\b", _I)
_DEVICE = re.compile(
    r"\b(?:device\s+(?:id|identifier|serial)|serial\s+(?:number|no\.?)|udid|idfa|gaid|android\s+id|"
    r"advertising\s+id|s/n)\s*(?:is|[:#=-]{1,2})?\s*(?P<value>[A-Z0-9][A-Z0-9:-]{5,39})\b",
    _I,
)
_MAC = re.compile(r"\b[0-9A-F]{2}(?:[:-][0-9A-F]{2}){5}\b", _I)
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+%'-]{1,64}@[^\W_](?:[\w-]{0,62}[^\W_])?(?:\.[^\W_](?:[\w-]{0,62}[^\W_])?)+", _I)
# An e-mail address written so that scrapers (and the pattern above) miss it: "jane.doe [at] example [dot] com",
# "jane.doe(at)example(dot)com", "jane dot doe at example dot com", "jane.doe%40example.com",
# "jane.doe&#64;example.com", "jane.doe @ example.com" (red-team probes: all passed whole, the last as "jane.doe @
# <URL>"). The "at" and "dot" words stand alone, the
# domain needs at least one dot and an alphabetic top-level domain, so "arrived at work" is no address.
_AT = r"(?:\s*(?:\[at\]|\(at\)|\{at\}|<at>)\s*|\s+at\s+|%40|&#0*64;|&commat;|\s+@\s*|\s*@\s+)"
_DOT = r"(?:\s*(?:\[dot\]|\(dot\)|\{dot\}|<dot>)\s*|\s+dot\s+|\.)"
_EMAIL_OBFUSCATED = re.compile(
    rf"(?<![\w.+-])[\w+-]{{1,64}}(?:{_DOT}[\w+-]{{1,64}}){{0,4}}{_AT}[^\W_][\w-]{{0,62}}(?:{_DOT}[^\W_][\w-]{{0,62}}){{1,4}}"
    r"(?![\w-])", _I)


def _obfuscated_email(value: str) -> bool:
    """Written with a spelled or encoded at (the plain pattern takes the rest) and an alphabetic TLD. With the
    bare word "at", the local part must look like one (a dot or a digit in it, or "dot" spelled anywhere):
    "look at example.com" is a sentence."""
    text = value.lower()
    at = re.search(_AT, text, _I)
    if at is None or ("@" in text and at.group().strip() != "@"):  # a plain "@": the plain pattern's
        return False
    local = text[:at.start()]
    if at.group().strip() == "at" and not (re.search(r"[.\d]", local) or " dot " in text):
        return False
    return email_tld(re.sub(_DOT, ".", re.sub(_AT, "@", text)).rstrip("."))


_AGE = re.compile(
    r"\b(?P<value>\d{1,3})(?:[- ]years?[- ]old|[- ]y/?o\b|[- ]yrs?[- ]old)"
    r"|\b(?:aged?|age\s+is|age:|turn(?:ed|s|ing)?|i\s+am|i'm)\s+(?P<v2>\d{1,3})\b(?!\s*(?:%|am|pm|:|\.\d))",
    _I,
)
_PERSON_CONTEXT = re.compile(
    r"(?:\bmy\s+name\s+is|\bname\s*:|\bi\s+am|\bi'm|\bthis\s+is|\bcall\s+me|\bsigned,?|\bregards,|\bdear|"
    r"\b(?:mr|mrs|ms|miss|dr|prof|sir|madam|mx)\.?)\s+"
    r"(?P<value>[A-Z][\w'-]+(?:\s+[A-Z]\.)?(?:\s+(?:van|von|de|der|da|di|del|la|le|du|bin|al)?\s*[A-Z][\w'-]+){0,3})",
)
# A calendar date is not a telephone number: the generic pattern took "2026-10-11" (and, starting after its
# first hyphen, "10-11") for one, scored 0.65 next to "home" or "office", so a date the policy generalizes to
# its year was tokenized whole instead (a new user's "Stayed home from 2026-10-11 to 2026-10-15").
_DATE_SHAPE = (r"(?:(?:19|20)\d{2}([-./])(?:0?[1-9]|1[0-2])\1(?:0?[1-9]|[12]\d|3[01])"
               r"|(?:0?[1-9]|[12]\d|3[01])([-./])(?:0?[1-9]|[12]\d|3[01])\2(?:19|20)\d{2})(?![\d.-]\d|\d)")
_NOT_A_DATE = rf"(?<!\d[-./])(?!{_DATE_SHAPE})"
_PHONE = re.compile(
    _NOT_A_DATE
    + r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?|\(0\)[\s.-]?)?\d{1,4}(?:[\s.-]?\(?\d{1,4}\)?){1,5}"
    r"(?:\s?(?:x|ext\.?)\s?\d{1,6})?(?!\w)(?!-\d)",
    _I,
)


_PHONE_STRONG = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?(?:\(0\)[\s.-]?)?\d{1,4}(?:[\s.-]?\d{1,4}){1,4}"
    r"|(?:\+?1[\s.-]?)?\(?\d{3}\)?[\s.-]?\d{3}[\s.-]\d{4})"
    r"(?:\s?(?:x|ext\.?)\s?\d{1,6})?(?!\w)(?!-\d)",
    _I,
)
# 3-4-4 digits, one separator used twice: how mobiles are written in Korea and Japan (010-1234-5678,
# 090-1234-5678) and China (138 0013 8000), and how some notes write a US number ("555-0199-4321"). HIPAA
# counts any telephone number as an identifier, yet the generic pattern above scores such a number 0.3, below
# the default threshold, so it was found only next to a context word ("Call ..."), not in "reached at ...".
# No date or time has this shape and it is never part of a longer digit group (the look-arounds), so it
# scores just over the default threshold alone and is raised by the same context words as the others.
_PHONE_3_4_4 = re.compile(r"(?<![\w+./-])\d{3}([-. ])\d{4}\1\d{4}(?![\w/-]|\.\d)")
_EXTENSION = re.compile(r"\s?(?:x|ext\.?)\s?\d+$", _I)


def _phone_ok(value: str) -> bool:
    """7 to 15 digits (E.164), an extension not counted."""
    digits = sum(c.isdigit() for c in _EXTENSION.sub("", value))
    return 7 <= digits <= 15


def _group(rx: re.Pattern[str], score: float, name: str, group: int | str = "value") -> Rx:
    return Rx(rx, score, group, name)


class _AgeRecognizer(RegexRecognizer):
    """Ages from ``65-year-old`` or ``aged 65``: two alternative groups in one pattern."""

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        if entities and "AGE" not in entities:
            return []
        out: list[Any] = []
        for m in _AGE.finditer(text):
            grp = "value" if m.group("value") is not None else "v2"
            start, end = m.span(grp)
            if int(m.group(grp)) > 125:
                continue
            out.append(RecognizerResult(
                entity_type="AGE", start=start, end=end, score=0.6,
                recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self._rname,
                                      RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id}))
        return out


class _AddressRecognizer(RegexRecognizer):
    """Street lines found by pattern, then extended over the block that follows them (unit, city, state and
    ZIP, country) so the whole address goes, not only its first line. A bare ``<number> <name> <number>`` line
    counts only when a block follows it or an address word is near."""

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        if entities and "STREET_ADDRESS" not in entities:
            return []
        out = super().analyze(text, entities, nlp_artifacts)
        for m in _NUM_NAME_NUM.finditer(text):
            if not any(r.start <= m.start() < r.end for r in out):
                score = self._boost(text, m.start(), m.end(), 0.3)
                cont = _CONTINUATION.match(text, m.end())
                if cont is not None and "\n" in cont.group():
                    score = max(score, 0.6)
                if score >= CONTEXT_MIN:
                    out.append(RecognizerResult(
                        entity_type="STREET_ADDRESS", start=m.start(), end=m.end(), score=score,
                        recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self._rname,
                                              RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id}))
        for r in out:
            cont = _CONTINUATION.match(text, r.end)
            if cont is not None and cont.end() > r.end:
                r.end = cont.end()
                while r.end > r.start and text[r.end - 1] in " \t,.":
                    r.end -= 1
            unit = _UNIT_BEFORE.search(text, max(0, r.start - 32), r.start)
            if unit is not None:
                r.start = unit.start()
        return out


# Between two numbers these words make a range, a count or a size ("11 to 15", "15 and 10", "3 of 4",
# "2 x 4"), never a "<number> <street> <number>" address.
_NUMBER_JOINER = r"(?i:to|at|from|since|until|till|through|thru|and|or|in|on|by|for|of|x|out)(?![\w'.-])"
_NUM_NAME_NUM = re.compile(  # "971 Kesk 53"; not "2026-10-11 to 2026-10-15" nor "October 11 to 15"
    rf"{_NOT_IN_DATE}\b\d{{1,6}}[ \t]+(?:(?!{_NUMBER_JOINER})[^\W\d_][^\W\d_'\u2019.-]*[ \t]+){{1,3}}"
    r"\d{1,5}[a-zA-Z]?\b\.?")
_CARD_CONTEXT = re.compile(
    r"\b(?:card|cc|visa|mastercard|amex|credit)\b\D{0,25}?(?P<value>\d(?:[ _-]?\d){11,18})\b", _I)
# A PAN whose digit groups are joined by underscores ("4111_1111_1111_1111", how some exports and log lines
# write it) or by dots ("4111.1111.1111.1111", as some European forms do) is still a PAN, yet passed through
# whole or in part: Presidio's card pattern takes only spaces and hyphens, its word boundaries never fall between
# a digit and "_", and its MAC address pattern took the first twelve dotted digits, leaving the last four. Groups
# of 3 to 6 digits (4-4-4-4, Amex 4-6-5, Diners 4-6-4, 19-digit 4-4-4-4-3), one separator throughout, 13 to 19
# digits in all, and the Luhn check, as Presidio asks of the others.
# The same for a dash doubled or set between spaces ("4111--1111--1111--1111", "4111 - 1111 - 1111 - 1111"):
# Presidio's pattern takes one hyphen or one space, and the spaCy pipeline read the spaced form as a date.
# Not a comma or full stop between spaces: "2019, 2020, 2021, 2022" is a list of years.
_DASHED = r"[ \t]*(?:--?|[\u2013\u2014])[ \t]*"
_CARD_JOINED = re.compile(
    rf"(?<![^\W_])(?<!\d[./,])\d{{4}}([_./,]|{_DASHED})\d{{3,6}}(?:\1\d{{3,6}}){{1,3}}(?![^\W_])(?![./,]\d)")
# The same red-team probe: slashes, commas and en or em dashes between a PAN's groups passed too (one separator
# throughout, Luhn-checked as above). And SSNs and phone numbers written with a slash, an underscore or a dash
# other than the hyphen: "ssn 912/45/6789", "415/555/0134", "415_555_0134".
_SSN_JOINED = re.compile(r"\b(?:ssn|social\s+security(?:\s+(?:number|no\.?|#))?)\W{0,3}"
                         rf"(?P<value>\d{{3}}([/_]|{_DASHED})\d{{2}}\2\d{{4}})(?!\w)", re.I)
_PHONE_JOINED = re.compile(rf"(?<![\w/])\(?\d{{3}}\)?([/_]|{_DASHED})\d{{3}}\1\d{{4}}(?![\w/])")
# Mastercard's 2-series (BINs 222100-272099, issued since 2017) is missing from Presidio's card pattern, which
# starts a PAN only with 1, 3, 4, 5 or 6: "2223 0031 2200 3222" without a "card" nearby was left whole or read as a
# date. Sixteen digits in groups of four, joined by one space or hyphen or not at all, Luhn-checked.
_CARD_MC2 = re.compile(r"\b(?:222[1-9]|22[3-9]\d|2[3-6]\d\d|27[01]\d|2720)([ -]?)\d{4}(?:\1\d{4}){2}\b")


# France's social security number (NIR, "numéro de sécurité sociale"): sex, year, month, department (2A/2B in
# Corsica), commune, order and a two-digit key, 97 - (the first 13 digits mod 97), Corsica's departments counted
# as 19 and 18. Presidio has no French recognizer; the spaCy pipeline read "1 84 12 76 451 089 46" as dates and
# left most of it. Groups may be spaced as on the carte Vitale.
_FR_NIR = re.compile(r"\b[1-478] ?\d{2} ?(?:0[1-9]|1[0-2]|[2-9]\d) ?(?:\d{2}|2[ABab]) ?\d{3} ?\d{3} ?\d{2}\b")


def _nir_ok(value: str) -> bool:
    """The NIR's key: 97 - (its first 13 characters as a number, 2A -> 19, 2B -> 18) mod 97."""
    compact = value.replace(" ", "").upper()
    body, key = compact[:13], compact[13:]
    body = body[:5] + body[5:7].replace("2A", "19").replace("2B", "18") + body[7:]
    return body.isdigit() and key.isdigit() and 97 - int(body) % 97 == int(key)


COUNTRY_RECOGNIZERS: dict[str, Callable[[], list[EntityRecognizer]]] = {
    "fr": lambda: [RegexRecognizer("FR_NIR", [Rx(_FR_NIR, 0.85, 0, "fr_nir")], name="MLGuardFrNirRecognizer",
                                   context=["sécurité sociale", "securite sociale", "nir", "insee", "vitale",
                                            "social security"], validator=_nir_ok)],
}
"""mlguard's own recognizers of one country, loaded when ``pii_engine.countries`` names it (Presidio's come
with their country code, ``mlguard.pii.engine.country_recognizers``)."""


def _pan_ok(value: str) -> bool:
    """13 to 19 digits passing the Luhn check."""
    return 13 <= sum(c.isdigit() for c in value) <= 19 and luhn(value)


_DATETIME = re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b")

_PERSON_LOWER = re.compile(
    r"\b(?:my\s+name\s+is|name\s*:|follow\s+up\s+with|directed\s+by\s*:?|signed\s+by|contact\s+person\s*:?)"
    r"[ \t]+(?P<value>[^\W\d_][^\W\d_'\u2019-]+(?:[ \t]+[^\W\d_]\.?)?[ \t]+[^\W\d_][^\W\d_'\u2019-]+"
    r"(?:[ \t]+(?-i:[A-Z])[^\W\d_'\u2019-]+)?)",
    _I,
)
_NAME_LINE = re.compile(
    r"^[ \t>?]*(?P<value>[A-Z][^\W\d_'\u2019-]+(?:[ \t]+[A-Z]\.?)?"
    r"(?:[ \t]+(?:(?:van|von|de|der|da|ten|ter|di|del|la|le|du)[ \t]+)?[A-Z][^\W\d_'\u2019-]+){1,2})[ \t]*$",
    re.M,
)
_PLACE_CONTEXT = re.compile(
    r"\b(?:originally\s+from|moved\s+(?:here\s+)?(?:from|to)|flew\s+to|grew\s+up\s+in|born\s+in|lives?\s+in|"
    r"living\s+in|arrived\s+(?:at|in)|home\s+(?:city|town)|hometown|city\s+of|town\s+of|village\s+of|"
    r"trip\s+to|travel(?:l?ed)?\s+to|year\s+in|where\s*:|from)"
    r"[ \t]+(?P<value>[A-Z][^\W\d_'\u2019-]*(?:['\u2019-][^\W\d_]+)*"
    r"(?:[ \t]+(?:(?:de|la|del|du|of|u|na|am|an|upon)[ \t]+)?[A-Z][^\W\d_'\u2019-]*(?:['\u2019-][^\W\d_]+)*){0,3})",
)


class _NameLineRecognizer(RegexRecognizer):
    """A line holding only a name (signatures, letter heads): only in multi-line texts."""

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        if "\n" not in text:
            return []
        return super().analyze(text, entities, nlp_artifacts)


def builtin_recognizers(countries: Sequence[str] = ()) -> list[EntityRecognizer]:
    """The recognizers mlguard adds to Presidio's defaults (and its e-mail replacement), with those of
    ``countries`` (``COUNTRY_RECOGNIZERS``)."""
    extra = [r for c in dict.fromkeys(c.lower() for c in countries) for r in COUNTRY_RECOGNIZERS.get(c, list)()]
    return [
        *extra,
        RegexRecognizer("EMAIL_ADDRESS", [Rx(_EMAIL, 0.9, 0, "email_any_tld")], name="MLGuardEmailRecognizer",
                        context=["email", "e-mail", "mail"], validator=email_tld),
        RegexRecognizer("EMAIL_ADDRESS", [Rx(_EMAIL_OBFUSCATED, 0.8, 0, "email_obfuscated")],
                        name="MLGuardObfuscatedEmailRecognizer", validator=_obfuscated_email),
        _AddressRecognizer("STREET_ADDRESS", [
            Rx(_US_STREET, 0.7, 0, "us_street"),
            Rx(_FOREIGN_STREET, 0.55, 0, "intl_street"),
            Rx(_PO_BOX, 0.6, 0, "po_box"),
            Rx(_MILITARY, 0.7, 0, "military"),
            Rx(_APO, 0.7, 0, "apo"),
            Rx(_CITY_STATE_ZIP, 0.6, 0, "city_state_zip"),
            Rx(_HOME_ALONE, 0.4, 0, "unit"),
            Rx(_FLAT_ALONE, 0.3, 0, "flat"),
            Rx(_CORNER, 0.6, 0, "corner_of"),
        ], name="MLGuardAddressRecognizer",
            context=["address", "live", "lives", "living", "lived", "located", "street", "ship", "deliver",
                     "mail", "residence", "reside", "home", "apartment", "suite", "sent to", "send", "moved",
                     "arrived at", "office", "offices", "meet", "return to", "is at", "it's in"]),
        RegexRecognizer("ZIP_CODE", [
            _group(_ZIP_CONTEXT, 0.95, "zip_context"),
            _group(_ZIP_AFTER_STATE, 0.7, "zip_after_state"),
            Rx(_ZIP_PLUS4, 0.5, 0, "zip_plus4"),
        ], name="MLGuardZipRecognizer", context=["zip", "postal", "postcode"]),
        RegexRecognizer("CREDIT_CARD", [_group(_CARD_CONTEXT, 0.6, "card_context")],
                        name="MLGuardCardContextRecognizer"),
        RegexRecognizer("CREDIT_CARD", [Rx(_CARD_JOINED, 1.0, 0, "pan_joined"), Rx(_CARD_MC2, 1.0, 0, "pan_mc2")],
                        name="MLGuardCardPatternRecognizer", validator=_pan_ok),
        RegexRecognizer("US_SSN", [_group(_SSN_JOINED, 0.9, "ssn_joined")], name="MLGuardSsnJoinedRecognizer"),
        RegexRecognizer("DATE_TIME", [Rx(_DATETIME, 0.6, 0, "iso_datetime")], name="MLGuardDateTimeRecognizer"),
        RegexRecognizer("DATE_OF_BIRTH", [_group(_DOB, 0.95, "dob_context")], name="MLGuardDobRecognizer"),
        RegexRecognizer("MEDICAL_RECORD_NUMBER", [_group(_MRN, 0.95, "mrn_context")],
                        name="MLGuardMrnRecognizer", validator=lambda v: any(c.isdigit() for c in v)),
        RegexRecognizer("HEALTH_PLAN_NUMBER", [_group(_HEALTH_PLAN, 0.95, "plan_context")],
                        name="MLGuardHealthPlanRecognizer", validator=lambda v: any(c.isdigit() for c in v)),
        RegexRecognizer("ACCOUNT_NUMBER", [_group(_ACCOUNT, 0.95, "account_context")],
                        name="MLGuardAccountRecognizer", validator=digits_at_least_6),
        RegexRecognizer("VEHICLE_ID", [Rx(_VIN, 0.85, 0, "vin_checksum"), _group(_VIN_CONTEXT, 0.95, "vin_context"),
                                       _group(_PLATE, 0.7, "plate_context")],
                        name="MLGuardVehicleRecognizer", validator=has_letter_and_digit),
        RegexRecognizer("DEVICE_ID", [_group(_IMEI, 1.0, "imei_context"), _group(_DEVICE, 0.95, "device_context"),
                                      Rx(_MAC, 0.6, 0, "mac")],
                        name="MLGuardDeviceRecognizer", validator=lambda v: any(c.isdigit() for c in v)),
        _AgeRecognizer("AGE", [], name="MLGuardAgeRecognizer"),
        RegexRecognizer("PERSON", [_group(_PERSON_CONTEXT, 0.6, "person_context"),
                                   _group(_PERSON_LOWER, 0.6, "person_context_any_case")],
                        name="MLGuardPersonContextRecognizer"),
        _NameLineRecognizer("PERSON", [_group(_NAME_LINE, 0.4, "name_line")], name="MLGuardNameLineRecognizer"),
        RegexRecognizer("LOCATION", [_group(_PLACE_CONTEXT, 0.5, "place_context")],
                        name="MLGuardPlaceRecognizer"),
        RegexRecognizer("PHONE_NUMBER", [Rx(_PHONE_STRONG, 0.5, 0, "phone_international_or_nanp"),
                                         Rx(_PHONE_3_4_4, 0.4, 0, "phone_3_4_4"),
                                         Rx(_PHONE_JOINED, 0.5, 0, "phone_joined"),
                                         Rx(_PHONE, 0.3, 0, "phone_generic")], name="MLGuardPhoneRecognizer",
                        context=["phone", "call", "tel", "telephone", "cell", "mobile", "number", "fax", "reach",
                                 "contact", "dial", "text", "answering", "landline", "desk", "office", "sms",
                                 "message", "messages", "registered", "whatsapp", "ph", "tel.", "home", "work"],
                        validator=_phone_ok),
    ]


def custom_recognizers(specs: Iterable[Mapping[str, Any]], *, origin: str) -> list[EntityRecognizer]:
    """Build recognizers declared in a policy or the config.

    Each spec: ``{name, entity, patterns: [{regex, score, group?}], context: [...], validator: luhn|vin|...}``.
    ``origin`` names where the spec came from, for error messages.
    """
    out: list[EntityRecognizer] = []
    for i, spec in enumerate(specs):
        where = f"{origin}[{i}]"
        entity = str(spec.get("entity", "")).strip()
        if not entity:
            raise ConfigError("custom recognizer needs an entity", field=where)
        patterns: list[Rx] = []
        for j, pat in enumerate(spec.get("patterns") or []):
            try:
                rx = re.compile(str(pat["regex"]), _I if pat.get("ignore_case", True) else 0)
            except (KeyError, re.error) as exc:
                raise ConfigError(f"bad regex ({type(exc).__name__})", field=f"{where}.patterns[{j}]") from None
            group = pat.get("group", "value" if "value" in rx.groupindex else 0)
            patterns.append(Rx(rx, float(pat.get("score", 0.6)), group, str(pat.get("name", f"p{j}"))))
        if not patterns:
            raise ConfigError("custom recognizer needs at least one pattern", field=where)
        vname = spec.get("validator")
        validator = None
        if vname and vname != "none":
            if vname not in VALIDATORS:
                raise ConfigError(f"unknown validator {vname!r} (known: {sorted(VALIDATORS)})", field=where)
            validator = VALIDATORS[str(vname)]
        out.append(RegexRecognizer(entity, patterns, name=str(spec.get("name") or f"custom_{entity.lower()}"),
                                   context=[str(c) for c in spec.get("context") or []], validator=validator))
    return out
