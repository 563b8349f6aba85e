"""The configuration reference, generated from the pydantic models so the README cannot drift from the code.

``mlguard config reference`` prints it as a Markdown table; a test checks that README.md lists every key.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from mlguard.config import GuardConfig


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def iter_keys(model: type[BaseModel] = GuardConfig, prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    """Yield (dotted key, type, default, description) for every key, nested models included."""
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        if info.default_factory is not None:
            try:
                value = info.default_factory()  # type: ignore[call-arg]
            except TypeError:
                value = "…"
            default = "(see below)" if isinstance(value, BaseModel) else repr(value)
        elif info.default is PydanticUndefined:
            default = "required"
        elif isinstance(info.default, Path):
            default = str(info.default)
        else:
            default = repr(info.default)
        yield key, _type_name(info.annotation), default, (info.description or "").replace("|", "\\|")
        nested = _nested_model(info.annotation)
        if nested is not None:
            is_list = typing.get_origin(info.annotation) is list
            yield from iter_keys(nested, f"{key}[]." if is_list else f"{key}.")


def markdown_table() -> str:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, typ, default, desc in iter_keys():
        cell = typ.replace("|", "\\|")
        rows.append(f"| `{key}` | {cell} | `{default}` | {desc} |")
    return "\n".join(rows)


START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def update_readme(path: Path) -> None:
    """Rewrite the table between the reference markers of ``path`` (``python -m mlguard.config.reference``)."""
    text = path.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{markdown_table()}\n{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    import sys

    update_readme(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md"))
