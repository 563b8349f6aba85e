"""``mlguard fairness resume|status`` (talk to a running guard) and ``mlguard report fairness`` (from the audit log).

Why resume goes through the admin endpoint rather than touching state directly: the stop lives in the serving
process (and, for the audit trail, must be recorded by it); the CLI is just an authenticated client. The token is
read from the environment, never from the command line (where ``ps`` and shell history would show it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from mlguard.cli._root import cli

DEFAULT_TOKEN_ENV = "MLGUARD_ADMIN_TOKEN"  # noqa: S105  (the variable name, not a token)
_STOPS = {"human": "human oversight", "fairness": "the fairness monitor"}


def _group(name: str, help_text: str) -> click.Group:
    """Get or create a subgroup of the root: another area may already have created ``report``."""
    existing = cli.commands.get(name)
    if isinstance(existing, click.Group):
        return existing
    group = click.Group(name, help=help_text)
    cli.add_command(group)
    return group


fairness_group = _group("fairness", "Live fairness monitoring: resume a route the monitor stopped, read the live "
                                    "status.")
report_group = _group("report", "Reports over the audit log.")


def _admin_call(url: str, prefix: str, token_env: str, method: str, path: str, body: dict[str, Any] | None,
                timeout: float) -> tuple[int, Any]:
    import httpx

    token = os.environ.get(token_env)
    if not token:
        raise click.UsageError(f"no admin token: set env {token_env}")
    target = url.rstrip("/") + prefix + path
    try:
        resp = httpx.request(method, target, json=body, timeout=timeout,
                             headers={"authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {target}: {type(exc).__name__}") from None
    try:
        doc = resp.json()
    except ValueError:
        doc = {"detail": resp.text[:500]}
    return resp.status_code, doc


_url = click.option("--url", required=True, help="Base URL of the running guarded service, e.g. http://127.0.0.1:8000")
_prefix = click.option("--prefix", default="/mlguard", show_default=True, help="Admin prefix of the guard.")
_token_env = click.option("--token-env", default=DEFAULT_TOKEN_ENV, show_default=True,
                          help="Environment variable holding the admin token.")


@fairness_group.command("resume")
@_url
@_prefix
@_token_env
@click.option("--route", type=int, default=None,
              help="Route index to resume (default: every route the fairness monitor stopped).")
@click.option("--reset", is_flag=True, help="Also clear the route's live window (after a corrected model).")
@click.option("--reason", default="",
              help="Why the route is resumed (recorded in the audit trail, never logged; at most 500 characters).")
@click.option("--timeout", type=float, default=10.0, show_default=True)
def resume(url: str, prefix: str, token_env: str, route: int | None, reset: bool, reason: str,
           timeout: float) -> None:
    """Lift the fairness monitor's stop (EU AI Act Art 14); the guard audits it.

    Only the monitor's stop: a route a person stopped (POST {prefix}/routes/N/stop) stays stopped. Naming such a
    route with --route fails (exit 1, nothing changed); a route stopped by both loses the monitor's stop and is
    reported as still halted. Exit 0 when the resume was applied, 1 otherwise."""
    body: dict[str, Any] = {"reset": reset, "reason": reason}
    if route is not None:
        body["route"] = route
    status, doc = _admin_call(url, prefix, token_env, "POST", "/fairness/resume", body, timeout)
    click.echo(json.dumps(doc, indent=2))
    if status != 200:
        detail = doc.get("detail") if isinstance(doc, dict) else None
        click.echo(f"resume failed: HTTP {status}" + (f": {detail}" if detail else ""), err=True)
        raise click.exceptions.Exit(1)
    for entry in doc.get("resumed", []) if isinstance(doc, dict) else []:
        if entry.get("halted"):
            by = " and ".join(_STOPS.get(c, str(c)) for c in entry.get("stopped_by") or ["human"])
            click.echo(f"route {entry.get('route')} is still stopped by {by} (a fairness resume does not lift it: "
                       f"POST {prefix}/routes/{entry.get('route')}/resume does)", err=True)
    for entry in doc.get("skipped", []) if isinstance(doc, dict) else []:
        click.echo(f"route {entry.get('route')} skipped: stopped by human oversight, not by the fairness monitor",
                   err=True)


@fairness_group.command("status")
@_url
@_prefix
@_token_env
@click.option("--timeout", type=float, default=10.0, show_default=True)
def status(url: str, prefix: str, token_env: str, timeout: float) -> None:
    """Print the live fairness report of every monitored route (exit 1 when one is in violation)."""
    code, doc = _admin_call(url, prefix, token_env, "GET", "/fairness", None, timeout)
    click.echo(json.dumps(doc, indent=2))
    if code != 200:
        raise click.exceptions.Exit(1)
    if any(r.get("report", {}).get("status") == "violation" for r in doc.get("routes", {}).values()):
        raise click.exceptions.Exit(1)


@report_group.command("fairness")
@click.option("--store", required=True, help="Audit store URL (sqlite:///... or postgresql://...).")
@click.option("--keyring", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Keyring file (default: env MLGUARD_KEYRING).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Report file to write.")
@click.option("--format", "fmt", type=click.Choice(["html", "json"]), default="html", show_default=True)
@click.option("--since", default=None, help="ISO 8601 start of the period (inclusive).")
@click.option("--until", default=None, help="ISO 8601 end of the period (exclusive).")
@click.option("--route", default=None, help="Only this route path.")
@click.option("--policy", "policies", multiple=True,
              help="Policy whose thresholds apply (repeatable; default: the policies named in the records).")
@click.option("--distribution-date", default=None, help="The tool's distribution date (LL144 summary).")
def report_fairness(store: str, keyring: Path | None, out: Path, fmt: str, since: str | None, until: str | None,
                    route: str | None, policies: tuple[str, ...], distribution_date: str | None) -> None:
    """Fairness report over the audit log (or a period): per-group rates, every metric, thresholds, plots and
    an LL144-style summary. Exit 1 when a route is in violation over the period."""
    from mlguard.audit.reader import AuditReader
    from mlguard.fairness.metrics import Thresholds
    from mlguard.fairness.report import build_report, collect, render_html, render_json

    reader = AuditReader(store, keyring)
    try:
        records = list(reader.iter_records(since=since, until=until, route=route))
    finally:
        reader.close()
    names = list(policies) or sorted({p for rd in collect(records).values() for p in rd.policies})
    thresholds = Thresholds()
    sources: dict[str, list[str]] = {}  # threshold -> the policies it came from (an auditor asks which sets it)
    if names:
        from mlguard.policy import resolve_policies

        try:
            effective = resolve_policies(names)
            thresholds = Thresholds.from_policy(effective.fairness)
            sources = {k: effective.origin(f"fairness.{k}") for k in thresholds.as_dict()}
        except Exception as exc:  # a policy no longer bundled: say so and use defaults
            click.echo(f"warning: thresholds from defaults ({type(exc).__name__} resolving policies)", err=True)
    report = build_report(records, thresholds=thresholds, since=since, until=until,
                          source=store.split(":", 1)[0] + " audit store", distribution_date=distribution_date,
                          threshold_sources=sources)
    text = render_json(report) if fmt == "json" else render_html(report)
    out.write_text(text, encoding="utf-8")
    statuses = {p: r["status"] for p, r in report["routes"].items()}
    said = {p: s + (" (no threshold set: nothing checked)" if report["routes"][p].get("status_detail") else "")
            for p, s in statuses.items()}
    click.echo(f"wrote {out} ({fmt}): " + (", ".join(f"{p} {s}" for p, s in said.items()) or "no decisions"),
               err=True)
    if "violation" in statuses.values():
        raise click.exceptions.Exit(1)
