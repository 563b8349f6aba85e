"""The small JSONPath subset used by configs: ``$``, ``.name``, ``['name']``, ``[3]``, ``[*]`` and ``.*``.

Why our own: configs only need addressing, not filtering; a 100-line subset with no dependency compiles once
and matches a concrete location in constant time per step, which the redactor does for every leaf.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mlguard.errors import ConfigError

Step = str | int | None
"""A compiled step: a member name, an array index, or None for the ``*`` wildcard."""

_TOKEN = re.compile(
    r"""\.(?P<name>[A-Za-z_][\w\-]*)      # .name
      | \.\*                              # .*
      | \[(?P<index>-?\d+)\]              # [3]
      | \[\*\]                            # [*]
      | \[(?P<q>['"])(?P<quoted>.*?)(?P=q)\]  # ['name with spaces']
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class JSONPath:
    """A compiled path. ``text`` keeps the source for messages and records."""

    text: str
    steps: tuple[Step, ...]

    def matches(self, location: tuple[str | int, ...]) -> bool:
        """True when the concrete ``location`` (member names and indices from the root) is addressed."""
        if len(location) != len(self.steps):
            return False
        for step, part in zip(self.steps, location, strict=True):
            if step is None:
                continue
            if step != part or isinstance(step, int) != isinstance(part, int):
                return False
        return True

    def find(self, doc: Any) -> Iterator[tuple[tuple[str | int, ...], Any]]:
        """Yield (location, value) for every node the path addresses in ``doc``."""
        if None not in self.steps:  # no wildcard: at most one node, walked without recursion
            found = _walk(doc, self.steps)
            if found is not None:
                yield found
            return
        yield from _find(doc, self.steps, ())

    def first(self, doc: Any, default: Any = None) -> Any:
        """The first addressed value, or ``default`` when the path addresses nothing."""
        if None not in self.steps:  # the common case (subject, output, features...): several per request
            found = _walk(doc, self.steps)
            return default if found is None else found[1]
        for _, value in self.find(doc):
            return value
        return default


def _walk(node: Any, steps: tuple[Step, ...]) -> tuple[tuple[str | int, ...], Any] | None:
    """``_find`` for a path without wildcards: (location, value), or None when it addresses nothing."""
    here: list[str | int] = []
    for step in steps:
        if isinstance(step, int):
            if not (isinstance(node, list) and -len(node) <= step < len(node)):
                return None
            idx = step % len(node)
            node = node[idx]
            here.append(idx)
        elif isinstance(node, dict) and step in node:
            node = node[step]
            here.append(step)  # type: ignore[arg-type]
        else:
            return None
    return tuple(here), node


def _find(node: Any, steps: tuple[Step, ...], here: tuple[str | int, ...]
          ) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    if not steps:
        yield here, node
        return
    step, rest = steps[0], steps[1:]
    if step is None:
        if isinstance(node, dict):
            for k, v in node.items():
                yield from _find(v, rest, (*here, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from _find(v, rest, (*here, i))
    elif isinstance(step, int):
        if isinstance(node, list) and -len(node) <= step < len(node):
            idx = step % len(node)
            yield from _find(node[idx], rest, (*here, idx))
    elif isinstance(node, dict) and step in node:
        yield from _find(node[step], rest, (*here, step))


def compile_path(text: str, *, field: str | None = None) -> JSONPath:
    """Compile ``text``; raise ConfigError naming ``field`` when it is outside the supported subset."""
    if not isinstance(text, str) or not text.startswith("$"):
        raise ConfigError(f"JSONPath must start with '$', got {text!r}", field=field)
    pos, steps = 1, []
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ConfigError(f"unsupported JSONPath syntax at offset {pos} in {text!r}", field=field)
        if m.group("name") is not None:
            steps.append(m.group("name"))
        elif m.group("index") is not None:
            steps.append(int(m.group("index")))
        elif m.group("quoted") is not None:
            steps.append(m.group("quoted"))
        else:
            steps.append(None)
        pos = m.end()
    return JSONPath(text, tuple(steps))


def format_location(location: tuple[str | int, ...]) -> str:
    """Render a concrete location as a JSONPath (``$.applicant.name``, ``$.items[2]``) for findings."""
    out = ["$"]
    for part in location:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif part.isidentifier():
            out.append(f".{part}")
        else:
            out.append("['" + part.replace("'", "\\'") + "']")
    return "".join(out)
