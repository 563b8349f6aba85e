"""``mlguard policy list | show | check``: read, compose and validate policies from the command line.

Why these three: ``list`` tells a user which regulations ship and when each must be re-checked; ``show
--effective`` lets counsel read the composed result with the source of every value before it is deployed;
``check`` is the linter a CI job runs on a deployment's own policy files (exit 1 with ``file:field: message``).
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import click
import yaml

from mlguard.cli._root import cli
from mlguard.errors import PolicyError
from mlguard.policy import (
    KNOWN_ENTITIES,
    bundled_policies,
    clear_cache,
    effective_view,
    find_policy,
    load_policy_file,
    resolve_policies,
    resolve_policy,
)

__all__ = ["policy_group"]


@cli.group("policy")
def policy_group() -> None:
    """Policies per regulation: list the bundled ones, show (composed) policies, check policy files.

    Exit codes: 0 success; 1 a policy is invalid (printed as file:field: message); 2 usage error
    (unknown option, unknown policy name, missing file).
    """


@policy_group.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def list_policies(fmt: str) -> None:
    """List the bundled policies: id, title, status and review_by date."""
    rows: list[dict[str, str]] = []
    for name, path in bundled_policies().items():
        try:
            doc = load_policy_file(path)
        except PolicyError as exc:
            rows.append({"id": name, "title": f"INVALID: {exc}", "status": "-", "review_by": "-"})
            continue
        overdue = " (past: re-check)" if doc.review_by < date.today() else ""
        rows.append({"id": doc.id, "title": doc.title, "status": doc.status,
                     "review_by": doc.review_by.isoformat() + overdue})
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    headers = {"id": "ID", "title": "TITLE", "status": "STATUS", "review_by": "REVIEW BY"}
    widths = {k: max(len(headers[k]), *(len(r[k]) for r in rows)) if rows else len(headers[k])
              for k in headers}
    for row in [headers, *rows]:
        click.echo("  ".join(row[k].ljust(widths[k]) for k in headers).rstrip())


@policy_group.command("show")
@click.argument("names", nargs=-1, required=True)
@click.option("--effective", is_flag=True,
              help="Compose the named policies and print the merged result, each value with its source.")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@click.option("--base-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory relative policy paths resolve against (default: the current directory).")
def show(names: tuple[str, ...], effective: bool, fmt: str, base_dir: Path | None) -> None:
    """Print policies NAME... (bundled names or file paths).

    Without --effective: each policy as if written out in full (its extends applied; ``inherited_from`` names
    the ancestor of every rule the file does not set itself). With --effective: the
    composition of all of them, every value with the policies it came from and their citations, then any
    conflicts and the settings the deployment must still provide.
    """
    for name in names:
        try:
            find_policy(name, base_dir)
        except PolicyError as exc:
            raise click.UsageError(str(exc)) from None
    try:
        if effective:
            _emit(effective_view(resolve_policies(list(names), base_dir)), fmt)
            return
        docs: list[dict[str, Any]] = []
        for name in names:
            resolved = resolve_policy(name, base_dir)
            doc = resolved.merged_doc().model_dump(mode="json", exclude_none=True)
            inherited = {k: f.origin for k, f in resolved.rules.items() if f.origin != resolved.id}
            docs.append({"extends_chain": [s.id for s in resolved.chain], **doc, "inherited_from": inherited})
            if resolved.conflicts:  # between the parents of extends: the merged rules alone hide them
                docs[-1]["conflicts"] = [c.model_dump(mode="json") for c in resolved.conflicts]
    except PolicyError as exc:
        click.echo(str(exc), err=True)
        raise click.exceptions.Exit(1) from None
    if fmt == "json":
        click.echo(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2, ensure_ascii=False))
    else:
        click.echo(yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True, width=110), nl=False)


def _emit(data: Any, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110), nl=False)


@policy_group.command("check")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--strict", is_flag=True, help="Also fail on warnings (past review_by, unknown entity names).")
def check(files: tuple[Path, ...], strict: bool) -> None:
    """Validate policy FILE... with their extends and composition: exit 1 on the first error of any file.

    Problems print as file:field: message. Warnings (a review_by date in the past, an entity no recognizer
    is known for, a conflict the composition or the merge of several ``extends`` resolved) print too and fail
    only with --strict. Errors and warnings about FILE name it as given on the command line, so both kinds
    point to the same place; an error in another file (a parent) names that file's absolute path.
    """
    clear_cache()  # check what is on disk now, not what an earlier call parsed
    failed = False
    for path in files:
        try:
            policy = resolve_policies([str(path)])
            resolved = resolve_policy(path)
        except PolicyError as exc:
            click.echo(_as_given(exc, path))
            failed = True
            continue
        warnings = _warnings(path, resolved.doc.review_by, resolved.doc.pii, resolved.merged_doc().pii)
        warnings.extend(f"{path}:{c.field}: conflict: {c.resolution}" for c in policy.conflicts)
        for w in warnings:
            click.echo(f"{w} (warning)")
        failed = failed or (strict and bool(warnings))
        if not warnings:
            click.echo(f"{path}: ok ({resolved.id} {resolved.doc.version}, {len(resolved.rules)} rules)")
    if failed:
        raise click.exceptions.Exit(1)


def _as_given(exc: PolicyError, path: Path) -> str:
    """``exc`` as ``file:field: message`` with FILE spelled as the user gave it.

    Why: loading resolves paths, so errors named ``/abs/dir/typo.yaml`` while warnings about the same file
    said ``typo.yaml``; a user (or an editor matching ``file:``) saw two files."""
    text = str(exc)
    if exc.file is None or Path(exc.file) != path.resolve() or not text.startswith(exc.file):
        return text
    return f"{path}{text[len(exc.file):]}"


def _warnings(path: Path, review_by: date, own_pii: Any, merged_pii: Any) -> list[str]:
    """Warnings about the file itself. Entities are those of its own ``pii.entities`` list, at their index in
    it: the merged list puts inherited entities first, so its index pointed at the wrong line of the file
    (``pii.entities.19`` for the first entity). Recognizers it inherits count as known."""
    out: list[str] = []
    if review_by < date.today():
        out.append(f"{path}:review_by: {review_by.isoformat()} is past: re-check the policy against the law")
    custom = {r.entity for r in merged_pii.custom_recognizers}
    for i, rule in enumerate(own_pii.entities):
        if rule.entity not in KNOWN_ENTITIES and rule.entity not in custom:
            out.append(f"{path}:pii.entities.{i}.entity: no recognizer is known for {rule.entity}; "
                       "declare one under pii.custom_recognizers or in the deployment config")
    return out
