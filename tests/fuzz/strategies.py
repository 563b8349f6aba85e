"""Hypothesis strategies for requests to the guarded credit-scoring example, by kind.

Each strategy yields a :class:`FuzzRequest` (bytes, headers, chunking and timing). ``valid=True`` only where the
request is a well-formed application the example app accepts: those must come back 200 with an audit id.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from tests.fuzz.harness import ADMIN_TOKEN, DECLARED, FEATURES, NOTE, NOTE_VALUES, PROTECTED, FuzzRequest

MAX_BODY = 1024 * 1024  # limits.max_body_bytes of the example (the default)
MAX_DEPTH = 32  # limits.max_depth (default)
JSON_CT = b"application/json"

# ------------------------------------------------------------------------------------------- building blocks

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
feature_values = st.one_of(st.sampled_from([0.0, 1.0, 9.0, 40.0]), finite,
                           st.integers(min_value=-10**12, max_value=10**12))
features = st.fixed_dictionaries({name: feature_values for name in FEATURES})
# Text without NUL (a limit of its own) and without lone surrogates (not encodable as UTF-8).
plain_chars = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
note_text = st.one_of(st.just(NOTE), st.text(plain_chars, max_size=200),
                      st.sampled_from(NOTE_VALUES).map(lambda v: f"Call {v} about it."))
applicant_id = st.one_of(st.just("APP-FUZZ-1"), st.from_regex(r"APP-[0-9]{1,8}", fullmatch=True))


@st.composite
def application(draw: st.DrawFn) -> dict[str, Any]:
    """A valid application carrying a random subset of the planted declared and protected values."""
    applicant: dict[str, Any] = {"id": draw(applicant_id)}
    for key in draw(st.lists(st.sampled_from(sorted(DECLARED)), unique=True)):
        applicant[key] = DECLARED[key]
    for key in draw(st.lists(st.sampled_from(sorted(PROTECTED)), unique=True)):
        applicant[key] = PROTECTED[key]
    doc: dict[str, Any] = {"applicant": applicant, "features": draw(features)}
    if draw(st.booleans()):
        doc["note"] = draw(note_text)
    if draw(st.booleans()):
        doc["extra"] = draw(st.dictionaries(st.text(plain_chars, max_size=8),
                                            st.integers(), max_size=3))
    return doc


def encode(doc: Any, draw: st.DrawFn) -> bytes:
    """Serialise the way different clients do: compact or spaced, escaped or raw UTF-8."""
    style = draw(st.sampled_from(["compact", "spaced", "ascii", "indent"]))
    if style == "compact":
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    if style == "spaced":
        return json.dumps(doc, ensure_ascii=False).encode()
    if style == "ascii":
        return json.dumps(doc).encode()
    return json.dumps(doc, indent=2, ensure_ascii=False).encode()


def split(body: bytes, draw: st.DrawFn, max_parts: int = 12) -> list[bytes]:
    """Split ``body`` into chunks at drawn offsets; empty chunks included on purpose."""
    if not body:
        return [b""]
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=max_parts - 1)))
    parts, prev = [], 0
    for c in cuts:
        parts.append(body[prev:c])
        prev = c
    parts.append(body[prev:])
    return parts


content_type_ok = st.sampled_from([b"application/json", b"application/json; charset=utf-8",
                                   b"Application/JSON", b"application/vnd.credit+json", b"application/json;"])


def headers_for(body: bytes, ctype: bytes | None, draw: st.DrawFn, *, length: bool | None = None
                ) -> list[tuple[bytes, bytes]]:
    headers = [(b"host", b"testserver")]
    if ctype is not None:
        headers.append((b"content-type", ctype))
    if length if length is not None else draw(st.booleans()):
        headers.append((b"content-length", str(len(body)).encode()))
    return headers


def wire(kind: str, body: bytes, draw: st.DrawFn, *, ctype: bytes | None = JSON_CT, valid: bool = False,
         slow: bool = False) -> FuzzRequest:
    """Put ``body`` on the wire: chunked or whole, sometimes slow, with or without Content-Length."""
    chunks = split(body, draw) if draw(st.booleans()) else [body]
    delay = draw(st.sampled_from([0.0, 0.0005, 0.002])) if slow or draw(st.integers(0, 9)) == 0 else 0.0
    return FuzzRequest(kind=kind, headers=headers_for(body, ctype, draw), chunks=chunks, delay=delay, valid=valid)


# ------------------------------------------------------------------------------------------------- kinds


@st.composite
def valid_requests(draw: st.DrawFn) -> FuzzRequest:
    doc = draw(application())
    ctype = draw(content_type_ok)
    return wire("valid", encode(doc, draw), draw, ctype=ctype, valid=True)


@st.composite
def odd_pii_values(draw: st.DrawFn) -> FuzzRequest:
    """Declared PII fields holding planted values in odd shapes: nested, in lists, as numbers, as keys."""
    doc = draw(application())
    key = draw(st.sampled_from(sorted(DECLARED)))
    value = DECLARED[key]
    depth = draw(st.integers(0, MAX_DEPTH - 4))
    shape = draw(st.sampled_from(["list", "dict", "deep", "number", "mixed", "key"]))
    wrapped: Any
    if shape == "list":
        wrapped = [value, value.upper(), 7]
    elif shape == "dict":
        wrapped = {"first": value.split(" ")[0], "full": value}
    elif shape == "deep":
        wrapped = value
        for _ in range(depth):
            wrapped = [wrapped]
    elif shape == "number":
        wrapped = int("".join(ch for ch in value if ch.isdigit()) or "7")
    elif shape == "key":
        wrapped = {value: 1}
    else:
        wrapped = [{"v": value}, None, True, 1.5]
    doc["applicant"][key] = wrapped
    return wire(f"odd-pii-{shape}", encode(doc, draw), draw)


@st.composite
def malformed_json(draw: st.DrawFn) -> FuzzRequest:
    """Truncated, mutated or arbitrary bytes where a JSON application was expected."""
    doc = draw(application())
    how = draw(st.sampled_from(["truncate", "mutate", "garbage", "empty", "trailing", "bom", "single-quotes"]))
    if how == "mutate":
        # A mutation can turn a member name into another ("name" -> "nam~"), moving a planted value out of its
        # declared field, where only NER stands between it and the app: that is detection quality, not what
        # these oracles judge. Mutated bodies carry neutral values instead.
        doc["applicant"] = {k: "n/a" if k != "id" else v for k, v in doc["applicant"].items()}
        doc.pop("note", None)
    good = encode(doc, draw)
    if how == "truncate":
        body = good[: draw(st.integers(0, max(0, len(good) - 1)))]
    elif how == "mutate":
        pos = draw(st.integers(0, len(good) - 1))
        body = good[:pos] + draw(st.binary(min_size=1, max_size=4)) + good[pos + 1:]
    elif how == "garbage":
        body = draw(st.binary(max_size=300))
    elif how == "empty":
        body = b""
    elif how == "trailing":
        body = good + draw(st.sampled_from([b"}", b",", b" x", b"{}", b"\x00"]))
    elif how == "bom":
        body = b"\xef\xbb\xbf" + good
    else:
        body = good.replace(b'"', b"'")
    return wire(f"malformed-{how}", body, draw)


@st.composite
def deep_nesting(draw: st.DrawFn) -> FuzzRequest:
    """Nesting within and beyond max_depth, at the root, in a declared field, in the note; up to 100,000 deep."""
    depth = draw(st.one_of(st.integers(1, 3 * MAX_DEPTH), st.sampled_from([MAX_DEPTH - 2, MAX_DEPTH - 1,
                                                                            MAX_DEPTH, MAX_DEPTH + 1, 1000,
                                                                            100_000])))
    where = draw(st.sampled_from(["root", "name", "note", "features"]))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    # Only the declared field carries a planted value: elsewhere it would not be "a declared field's value".
    inner = json.dumps(DECLARED["name"] if where == "name" else "leaf").encode()
    nested = opener * depth + inner + closer * depth
    if where == "root":
        body = nested
    else:
        doc = draw(application())
        marker = "@@NEST@@"
        if where == "name":
            doc["applicant"]["name"] = marker
        elif where == "note":
            doc["note"] = marker
        else:
            doc["features"]["education_num"] = marker
        body = json.dumps(doc).encode().replace(json.dumps(marker).encode(), nested)
    return wire(f"deep-{where}", body, draw)


HUGE_NUMBERS = [b"1e400", b"-1e400", b"1E+999999", b"1e-400", b"-0.0", b"1" * 5000, b"-" + b"9" * 64,
                b"9" * 64, b"9" * 65, b"1" * 5000 + b".5", b"0." + b"0" * 5000 + b"1", b"123456789" * 8 + b"e-5",
                b"1e308", b"1.7976931348623157e309", b"4e-324", b"-" + b"0" * 70]


@st.composite
def huge_numbers(draw: st.DrawFn) -> FuzzRequest:
    """Numbers out of float range, with thousands of digits, at the edge of max_integer_digits."""
    token = draw(st.one_of(st.sampled_from(HUGE_NUMBERS),
                           st.integers(1, 6000).map(lambda n: b"7" * n),
                           st.integers(300, 100_000).map(lambda e: b"1e" + str(e).encode())))
    doc = draw(application())
    where = draw(st.sampled_from(["features.education_num", "features.capital_gain", "applicant.ssn",
                                  "applicant.id", "extra"]))
    marker = "@@NUM@@"
    section, key = where.split(".") if "." in where else (where, None)
    if key is None:
        doc[section] = marker
    else:
        doc[section][key] = marker
    body = json.dumps(doc).encode().replace(json.dumps(marker).encode(), token)
    return wire("huge-number", body, draw)


@st.composite
def non_utf8(draw: st.DrawFn) -> FuzzRequest:
    """Bodies that are not UTF-8: stray bytes inside a declared value, other encodings, overlong forms."""
    doc = draw(application())
    doc["applicant"]["name"] = DECLARED["name"] + " Ødegård"
    how = draw(st.sampled_from(["latin-1", "utf-16", "utf-32", "inject", "overlong", "cesu"]))
    text = json.dumps(doc, ensure_ascii=False)
    if how in ("latin-1", "utf-16", "utf-32"):
        body = text.encode(how, errors="replace")
    elif how == "inject":
        raw = text.encode()
        pos = raw.index(DECLARED["name"].encode())
        body = raw[:pos] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88"])) + \
            raw[pos:]
    elif how == "overlong":
        body = text.encode().replace(b"/", b"\xc0\xaf", 1) if "/" in text else text.encode() + b"\xc0\xaf"
        body = body.replace(b"{", b"{\"k\":\"\xc0\xaf\",", 1)
    else:  # a surrogate pair encoded as two 3-byte sequences (CESU-8), not valid UTF-8
        body = text.encode().replace(b"}", b',"x":"\xed\xa0\xbd\xed\xb8\x80"}', 1)
    return wire(f"non-utf8-{how}", body, draw)


WRONG_TYPES = [None, b"", b"text/plain", b"application/x-www-form-urlencoded", b"multipart/form-data; boundary=x",
               b"application/jsonx", b"application/xml", b"json", b"application/json-seq", b"*/*",
               b"application/ json", b"\xff\xfe", b"application/" + b"x" * 300 + b"+json", b"application/+json",
               b"text/json", b"application/problem+json", b"APPLICATION/VND.API+JSON; q=1",
               b"application/json\x00", b"application/json, text/plain"]


@st.composite
def content_types(draw: st.DrawFn) -> FuzzRequest:
    """Wrong, missing, garbled, duplicated and borderline content types around a valid application body."""
    body = encode(draw(application()), draw)
    ctype = draw(st.sampled_from(WRONG_TYPES))
    req = wire("content-type", body, draw, ctype=ctype)
    if draw(st.integers(0, 4)) == 0:  # a second Content-Type header after the first
        req.headers.append((b"content-type", draw(st.sampled_from([b"text/plain", JSON_CT]))))
    return req


@st.composite
def oversized(draw: st.DrawFn) -> FuzzRequest:
    """Over max_body_bytes: declared, undeclared and chunked; and Content-Length headers that lie."""
    how = draw(st.sampled_from(["declared", "chunked", "lying-small", "lying-large", "bad-length", "at-limit"]))
    doc = draw(application())
    if how == "at-limit":  # just under the limit: long strings (unscanned, replaced whole) the app ignores
        base = len(json.dumps(doc).encode())
        doc["pad"] = ["p" * 25_000] * ((MAX_BODY - base - 64) // 25_004)
        return wire("oversized-at-limit", json.dumps(doc).encode(), draw, valid=True)
    if how in ("declared", "chunked"):
        doc["pad"] = ["x" * 50_000] * (MAX_BODY // 50_000 + draw(st.integers(1, 3)))
        body = json.dumps(doc).encode()
        parts = max(2, len(body) // draw(st.sampled_from([65_536, 200_000, 1_000_000])) + 1)
        step = len(body) // parts + 1
        chunks = [body[i:i + step] for i in range(0, len(body), step)]
        headers = headers_for(body, JSON_CT, draw, length=how == "declared")
        return FuzzRequest(kind=f"oversized-{how}", headers=headers, chunks=chunks)
    body = encode(doc, draw)
    headers = headers_for(body, JSON_CT, draw, length=False)
    if how == "lying-small":
        headers.append((b"content-length", str(draw(st.integers(0, max(0, len(body) - 1)))).encode()))
    elif how == "lying-large":
        headers.append((b"content-length", str(len(body) + draw(st.integers(1, 10**6))).encode()))
    else:
        headers.append((b"content-length", draw(st.sampled_from([b"-1", b" 12 ", b"1e3", b"0x10", b"",
                                                                b"9" * 40, b"12, 12", b"\xff", b"+5"]))))
    return FuzzRequest(kind=f"oversized-{how}", headers=headers, chunks=split(body, draw))


@st.composite
def slow_and_disconnects(draw: st.DrawFn) -> FuzzRequest:
    """Slow bodies, many tiny chunks, and clients that go away before, during or after the body."""
    doc = draw(application())
    body = encode(doc, draw)
    how = draw(st.sampled_from(["slow", "tiny-chunks", "disconnect-mid", "disconnect-start", "disconnect-after"]))
    if how == "tiny-chunks":
        size = draw(st.integers(1, 16))
        chunks = [body[i:i + size] for i in range(0, len(body), size)]
        return FuzzRequest(kind="tiny-chunks", headers=headers_for(body, JSON_CT, draw), chunks=chunks,
                           valid=True)
    chunks = split(body, draw, max_parts=8)
    req = FuzzRequest(kind=how, headers=headers_for(body, JSON_CT, draw), chunks=chunks,
                      delay=draw(st.sampled_from([0.001, 0.003, 0.01])), valid=how == "slow")
    if how == "disconnect-mid":
        req.chunks = chunks if len(chunks) > 1 else [body[: len(body) // 2], body[len(body) // 2:]]
        req.disconnect_after = draw(st.integers(1, len(req.chunks) - 1))
    elif how == "disconnect-start":
        req.disconnect_after = 0
    elif how == "disconnect-after":
        req.disconnect_after = len(chunks)  # the whole body, then the client is gone before the response
    return req


@st.composite
def duplicate_keys(draw: st.DrawFn) -> FuzzRequest:
    """The same member twice: a planted value first, then something else that a parser keeps instead."""
    doc = draw(application())
    key = draw(st.sampled_from(sorted(DECLARED) + sorted(PROTECTED)))
    planted = DECLARED.get(key) or PROTECTED[key]
    later = draw(st.sampled_from(["null", '"x"', "1", "{}", "[]"]))
    doc["applicant"].pop(key, None)
    raw = json.dumps(doc).encode()
    body = raw.replace(b'"applicant": {', b'"applicant": {"' + key.encode() + b'": ' + json.dumps(planted).encode()
                       + b', "' + key.encode() + b'": ' + later.encode() + b", ", 1)
    return wire("duplicate-key", body, draw)


@st.composite
def non_finite_literals(draw: st.DrawFn) -> FuzzRequest:
    """NaN, Infinity and -Infinity literals (not JSON), where a number goes."""
    literal = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"nan", b"inf", b"+1", b"01", b".5",
                                    b"1.", b"0x1F", b"1_000"]))
    doc = draw(application())
    doc["features"]["capital_gain"] = "@@LIT@@"
    body = json.dumps(doc).encode().replace(b'"@@LIT@@"', literal)
    return wire("literal", body, draw)


@st.composite
def odd_strings(draw: st.DrawFn) -> FuzzRequest:
    """Strings the limits name: NUL, lone surrogate escapes, over max_string_length; arrays over the limit."""
    doc = draw(application())
    how = draw(st.sampled_from(["nul", "surrogate", "long-string", "long-array", "escaped-pii", "control"]))
    if how == "long-array":
        doc["extra"] = list(range(10_001))
        return wire("long-array", json.dumps(doc).encode(), draw)
    if how == "long-string":
        doc["note"] = DECLARED["name"] + "y" * 100_001
        return wire("long-string", json.dumps(doc).encode(), draw)
    field = draw(st.sampled_from(["name", "email"]))
    doc["applicant"].pop(field, None)
    if how == "escaped-pii":  # every character of the planted name as a \\u escape: still the same value
        escaped = "".join(f"\\u{ord(c):04x}" for c in DECLARED[field]).encode()
        body = json.dumps(doc).encode().replace(
            b'"applicant": {', b'"applicant": {"' + field.encode() + b'": "' + escaped + b'", ', 1)
        return wire("escaped-pii", body, draw, valid=True)
    inject = {"nul": "\\u0000", "surrogate": "\\ud83d", "control": "\\u0007\\u001b[31m"}[how]
    body = json.dumps(doc).encode().replace(
        b'"applicant": {', b'"applicant": {"' + field.encode() + b'": "' + json.dumps(DECLARED[field])[1:-1].encode()
        + inject.encode() + b'", ', 1)
    return wire(how, body, draw, valid=how == "control")


METHODS = ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "FOO", "post", "CONNECT"]
PATHS = ["/predict", "/predict/", "//predict", "/PREDICT", "/predict%00", "/health", "/openapi.json", "/",
         "/mlguard", "/mlguard/", "/mlguard/health", "/mlguard/policy", "/mlguard/metrics",
         "/mlguard/audit/records/x", "/mlguard/feedback", "/mlguard/routes/0/stop", "/mlguard/../predict",
         "/mlguardx", "/mlguard/explanations/" + "a" * 300, "/nope"]


@st.composite
def methods_and_paths(draw: st.DrawFn) -> FuzzRequest:
    """Unusual methods and paths around the guarded route and the admin prefix, with and without the token,
    carrying a planted application or garbage as the body."""
    method = draw(st.sampled_from([*METHODS, "POST"]))
    path = draw(st.sampled_from(PATHS))
    if path == "/predict" and method == "POST":
        method = "PUT"
    if path in ("/mlguard/routes/0/stop",):  # stopping the route would refuse the other tests' traffic
        method = "GET"
    body = draw(st.one_of(st.builds(lambda d: json.dumps(d).encode(), application()), st.binary(max_size=64)))
    headers = headers_for(body, draw(st.sampled_from([JSON_CT, b"text/plain", None])), draw)
    if path.startswith("/mlguard") and draw(st.booleans()):
        token = draw(st.sampled_from([ADMIN_TOKEN, "wrong", DECLARED["ssn"], ""]))
        headers.append((b"authorization", f"Bearer {token}".encode()))
    query = draw(st.sampled_from([b"", b"x=1", ("name=" + DECLARED["name"].replace(" ", "+")).encode()]))
    return FuzzRequest(kind="method-path", method=method, path=path, headers=headers,
                       chunks=split(body, draw, max_parts=3), query=query)


@st.composite
def admin_feedback(draw: st.DrawFn) -> FuzzRequest:
    """The admin feedback endpoint (token given) fed fuzzed JSON: its errors must be JSON, never echo input."""
    doc = draw(st.one_of(
        st.fixed_dictionaries({"audit_id": st.text(max_size=40), "label": st.one_of(st.booleans(), st.text(),
                                                                                     st.integers())}),
        st.just({"subject": DECLARED["ssn"], "label": True}),
        st.dictionaries(st.text(max_size=10), st.one_of(st.text(max_size=20), st.integers()), max_size=4)))
    body = draw(st.one_of(st.just(json.dumps(doc).encode()), st.binary(max_size=40)))
    headers = headers_for(body, JSON_CT, draw)
    headers.append((b"authorization", f"Bearer {ADMIN_TOKEN}".encode()))
    return FuzzRequest(kind="admin-feedback", path="/mlguard/feedback", headers=headers, chunks=[body])


BY_KIND = {
    "valid": valid_requests(),
    "odd-pii": odd_pii_values(),
    "malformed": malformed_json(),
    "deep": deep_nesting(),
    "huge-number": huge_numbers(),
    "non-utf8": non_utf8(),
    "content-type": content_types(),
    "oversized": oversized(),
    "slow": slow_and_disconnects(),
    "duplicate-key": duplicate_keys(),
    "literal": non_finite_literals(),
    "odd-string": odd_strings(),
    "method-path": methods_and_paths(),
    "admin-feedback": admin_feedback(),
}
