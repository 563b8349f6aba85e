"""Capped body reading, limited JSON parsing, replay to the app and response capture.

Why here and not in the middleware: these are the only places that touch raw bytes, and every limit they
enforce must name itself in the refusal without echoing a byte of the body (it may hold personal data).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from mlguard.config import LimitSettings
from mlguard.errors import (
    BodyLimitExceeded,
    BodyTooLarge,
    ClientDisconnected,
    MalformedBody,
    UnsupportedMediaType,
)
from mlguard.types import Message, Receive, Scope, Send

_SURROGATE = re.compile("[\ud800-\udfff]")
_INF = float("inf")


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of request header ``name`` (lower-case), or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def check_content_type(scope: Scope, limits: LimitSettings) -> None:
    """Refuse media types other than the configured JSON ones (415), and a compressed body (415).

    Applies to a body that has bytes only: :func:`read_body` calls it (as ``check``) once it knows the body is
    not empty. An empty body (Content-Length 0, or a request that ends without a byte) is "no document" with
    or without a Content-Type: a DELETE of ``/applicants/{id}`` has nothing to send, and refusing it (415
    without a type, 400 "Expecting value" with one) made such a route impossible to guard."""
    raw = header(scope, b"content-type")
    media = raw.split(b";", 1)[0].strip().lower().decode("latin-1") if raw else ""
    if not (media in limits.content_types or (media.startswith("application/") and media.endswith("+json"))):
        shown = media if media and len(media) < 100 and media.isprintable() else "missing or unreadable"
        raise UnsupportedMediaType(
            f"content type {shown!r} is not accepted on this route; send one of {limits.content_types}",
            limit="content_types",
        )
    # A compressed body cannot be inspected (it was refused as "not valid UTF-8 (at byte 1)", a riddle): say so.
    # Every Content-Encoding header and every coding in it: "identity" first and "gzip" in a second header (or
    # "identity, gzip") passed as identity, and an app or proxy that decodes the whole list would read what the
    # guard never did (a security review).
    codings = [c.strip().lower() for key, value in scope.get("headers", ()) if key == b"content-encoding"
               for c in bytes(value).decode("latin-1").split(",")]
    encoding = ", ".join(c for c in codings if c not in ("", "identity"))
    if encoding:
        shown = encoding if len(encoding) < 40 and encoding.isprintable() else "unreadable"
        raise UnsupportedMediaType(
            f"a request body with Content-Encoding {shown!r} is not inspected on this route; send the JSON "
            "uncompressed", limit="content_encoding")


async def read_body(scope: Scope, receive: Receive, limit: int, check: Callable[[], None] | None = None) -> bytes:
    """Read the whole request body, refusing more than ``limit`` bytes (413) before reading them all.

    ``check`` (the content-type check, :func:`check_content_type`) runs before anything else when the request
    declares a non-zero (or unreadable) Content-Length, else when the first byte arrives: a body with bytes is
    refused for its type exactly as before (415 ahead of 413 and 400), while an empty one (``Content-Length:
    0``, or no Content-Length and a request that ends without a byte) is returned as ``b""`` unchecked. The
    caller treats ``b""`` as "no document" (it is not parsed: empty is not JSON), so a bodiless DELETE can be
    guarded; a body of whitespace is not empty and stays malformed (400)."""
    declared = header(scope, b"content-length")
    length: int | None = None
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            length = None
    if check is not None and declared is not None and length != 0:
        check()
        check = None
    if declared is not None:
        if length is None:
            raise MalformedBody("Content-Length header is not an integer", limit="content-length")
        if length > limit:
            raise BodyTooLarge(f"body of {length} bytes exceeds max_body_bytes={limit}", limit="max_body_bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.disconnect":
            raise ClientDisconnected("client disconnected before the body was complete")
        if kind != "http.request":
            continue
        chunk = message.get("body", b"")
        if chunk and check is not None:  # the body has bytes after all (chunked, or a lying Content-Length: 0)
            check()
            check = None
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body exceeds max_body_bytes={limit}", limit="max_body_bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def parse_json(raw: bytes, limits: LimitSettings) -> Any:
    """Parse ``raw`` as UTF-8 JSON within the limits; each refusal names the limit, never the content."""
    try:
        # A byte order mark is ignored, as Python's json and so Starlette and FastAPI ignore it (RFC 8259 8.1
        # allows it); the body the app gets is unchanged unless a stage rewrites it.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"body is not valid UTF-8 (at byte {exc.start})", limit="utf-8") from None
    max_digits = limits.max_integer_digits

    def parse_int(token: str) -> int:
        if len(token.lstrip("-")) > max_digits:
            raise BodyLimitExceeded(f"an integer has more than max_integer_digits={max_digits} digits",
                                    limit="max_integer_digits")
        return int(token)

    def parse_constant(token: str) -> Any:
        raise MalformedBody(f"{token} is not valid JSON", limit="json")

    try:
        doc = json.loads(text, parse_int=parse_int, parse_float=_parse_float, parse_constant=parse_constant,
                         object_pairs_hook=_unique_members)
    except RecursionError:
        raise BodyLimitExceeded(f"nesting deeper than max_depth={limits.max_depth}", limit="max_depth") from None
    except json.JSONDecodeError as exc:
        # exc.msg is a fixed phrase from the decoder; position, not content, is reported.
        raise MalformedBody(f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                            limit="json") from None
    if not _within_by_size(text, limits):
        _check_limits(doc, limits)
    return doc


def _within_by_size(text: str, limits: LimitSettings) -> bool:
    """True when ``text`` is too small to break any limit ``_check_limits`` enforces, so the walk is skipped.

    Why it holds: a string is never longer than the text; an array of n items takes at least 2n-1 characters;
    every level of nesting takes a ``{`` or ``[`` (counting those inside strings only overcounts); a NUL or a
    lone surrogate can only arrive as a ``\\u`` escape (the decoder refuses raw control characters in strings, and
    UTF-8 decoding refuses encoded surrogates). Most model requests are a few hundred bytes: this answers them in
    a few string scans instead of a Python walk over every node."""
    n = len(text)
    return (n <= limits.max_string_length and n < 2 * limits.max_array_length and "\\u" not in text
            and text.count("{") + text.count("[") <= limits.max_depth)


def _parse_float(token: str) -> float:
    """A JSON number with a fraction or exponent. One that overflows a double (``1e400``) would become
    infinity, which JSON cannot carry: the app would receive a different number than the client sent, or the
    re-serialised body would not be JSON at all. Refused (422), never rounded."""
    value = float(token)
    if value in (_INF, -_INF):
        raise BodyLimitExceeded("a number is outside the range of a 64-bit float", limit="number_range")
    return value


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build one JSON object, refusing a member name given twice.

    Why refuse (RFC 8259 4: names SHOULD be unique; behaviour with duplicates is unpredictable): the guard
    keeps the last value, another parser may keep the first. When redaction changes nothing the app receives
    the original bytes, so ``{"ssn": "<value>", "ssn": null}`` would carry the first value past the guard
    unredacted. One meaning per document, or a 400."""
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise MalformedBody("an object has the same member name twice", limit="duplicate_member")
    return doc



def _check_limits(doc: Any, limits: LimitSettings) -> None:
    """Walk the parsed document once, iteratively, checking depth, string and array limits."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    max_depth, max_str, max_arr = limits.max_depth, limits.max_string_length, limits.max_array_length
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            _check_string(node, max_str)
        elif isinstance(node, dict):
            if depth > max_depth:
                raise BodyLimitExceeded(f"nesting deeper than max_depth={max_depth}", limit="max_depth")
            for key, value in node.items():
                _check_string(key, max_str)
                if isinstance(value, dict | list | str):
                    stack.append((value, depth + 1))
        elif isinstance(node, list):
            if depth > max_depth:
                raise BodyLimitExceeded(f"nesting deeper than max_depth={max_depth}", limit="max_depth")
            if len(node) > max_arr:
                raise BodyLimitExceeded(f"an array has more than max_array_length={max_arr} items",
                                        limit="max_array_length")
            stack.extend((v, depth + 1) for v in node if isinstance(v, dict | list | str))


def _check_string(s: str, max_len: int) -> None:
    if len(s) > max_len:
        raise BodyLimitExceeded(f"a string is longer than max_string_length={max_len}",
                                limit="max_string_length")
    if not s.isascii():
        if _SURROGATE.search(s):
            raise MalformedBody("a string holds a lone surrogate escape (not valid Unicode)", limit="unicode")
        if "\x00" in s:
            raise BodyLimitExceeded("a string holds a NUL character", limit="nul")
    elif "\x00" in s:
        raise BodyLimitExceeded("a string holds a NUL character", limit="nul")


_ORJSON_STRICT = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS


def dump_json(doc: Any) -> bytes:
    """Compact UTF-8 JSON, as sent to the app and the client when a document was rewritten.

    The standard library's ``json.dumps(ensure_ascii=False, separators=(",", ":"), allow_nan=False)`` defines
    it (ValueError on NaN or infinity, TypeError on what JSON cannot hold). orjson writes the same document
    several times faster (it runs twice per guarded request that rewrites both bodies); it writes NaN as
    ``null`` instead of refusing, so any output holding ``null`` goes through the standard path to find out,
    as does everything orjson refuses (big integers, subclasses, non-string keys, lone surrogates)."""
    try:
        out: bytes = orjson.dumps(doc, option=_ORJSON_STRICT)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        pass
    else:
        if b"null" not in out:
            return out
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def replay_receive(body: bytes, receive: Receive) -> Receive:
    """A receive() that yields ``body`` once, then hands later calls to the original (so a disconnect still
    reaches the app)."""
    sent = False

    async def _receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return _receive


def with_content_length(scope: Scope, length: int) -> Scope:
    """A copy of ``scope`` whose Content-Length matches a rewritten body, without Transfer-Encoding (a chunked
    request reached the app saying both: the body it gets is one piece of known length)."""
    headers = [(k, v) for k, v in scope.get("headers", ()) if k not in (b"content-length", b"transfer-encoding")]
    headers.append((b"content-length", str(length).encode()))
    new = dict(scope)
    new["headers"] = headers
    return new


@dataclass(slots=True)
class CapturedResponse:
    """The app's response as captured by ``ResponseCapture``."""

    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    complete: bool = False
    streamed: bool = False  # True: passed through as it came (not inspected)
    started: bool = False  # the start message was sent on to the client
    start_extra: dict[str, Any] = field(default_factory=dict)  # the start message's other keys ("trailers": True)
    held: list[Message] = field(default_factory=list)  # messages after the body (trailers): sent after ours


_JSON_TYPES = (b"application/json",)


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    for k, v in headers:
        if k.lower() == b"content-type":
            media = v.split(b";", 1)[0].strip().lower()
            return media in _JSON_TYPES or (media.startswith(b"application/") and media.endswith(b"+json"))
    return False


class ResponseCapture:
    """A send() for the app that buffers JSON responses for the stages and streams everything else through.

    Non-JSON and ``text/event-stream`` responses go straight to the client with ``pass_headers`` added and are
    marked not inspected.
    """

    def __init__(self, send: Send, pass_headers: list[tuple[bytes, bytes]], max_bytes: int) -> None:
        self._send = send
        self._pass_headers = pass_headers
        self._max = max_bytes
        self._chunks: list[bytes] = []
        self._size = 0
        self.response = CapturedResponse()

    async def __call__(self, message: Message) -> None:
        r = self.response
        kind = message["type"]
        if kind == "http.response.start":
            r.status = int(message["status"])
            r.headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", ())]
            r.start_extra = {k: v for k, v in message.items() if k not in ("type", "status", "headers")}
            if not _is_json(r.headers):
                r.streamed = True
                r.started = True
                out = dict(message)
                out["headers"] = [*r.headers, *self._pass_headers, (b"mlguard-inspected", b"false")]
                await self._send(out)
            return
        if kind == "http.response.body":
            if r.streamed:
                await self._send(message)
                if not message.get("more_body", False):
                    r.complete = True
                return
            chunk = message.get("body", b"")
            self._size += len(chunk)
            self._chunks.append(chunk)
            if self._size > self._max:
                # Too large to inspect: flush what we hold and stream the rest, marked not inspected.
                r.streamed = True
                r.started = True
                await self._send({"type": "http.response.start", "status": r.status,
                                  "headers": [*r.headers, *self._pass_headers, (b"mlguard-inspected", b"false")]})
                await self._send({"type": "http.response.body", "body": b"".join(self._chunks),
                                  "more_body": message.get("more_body", False)})
                self._chunks.clear()
                if not message.get("more_body", False):
                    r.complete = True
                return
            if not message.get("more_body", False):
                r.body = b"".join(self._chunks)
                self._chunks.clear()
                r.complete = True
            return
        if r.started:  # streamed through: in order, as it comes
            await self._send(message)
        elif kind == "http.response.pathsend":
            # The body is a file the server sends: not ours to read. Its start goes first (the extension was
            # forwarded before the held start, breaking the protocol), marked not inspected.
            r.streamed = r.started = True
            await self._send({**r.start_extra, "type": "http.response.start", "status": r.status,
                              "headers": [*r.headers, *self._pass_headers, (b"mlguard-inspected", b"false")]})
            await self._send(message)
            r.complete = True
        else:  # e.g. http.response.trailers: after the body, which is still held
            r.held.append(message)

    async def flush_partial(self) -> None:
        """Send what was buffered so far, as the app sent it: when the app raised mid-response or returned
        without finishing it. The body ends only if the app ended it: a response cut short stays cut short
        (``more_body`` left true, so the server aborts it as it would without the guard), instead of reaching
        the client as a complete 200 with half a JSON document."""
        r = self.response
        if r.status and not r.started:
            r.started = True
            await self._send({**r.start_extra, "type": "http.response.start", "status": r.status,
                              "headers": r.headers})
            await self._send({"type": "http.response.body", "body": b"".join(self._chunks) or r.body,
                              "more_body": not r.complete})
            if r.complete:
                for message in r.held:
                    await self._send(message)
