"""Fairness reports over the audit trail: per-group counts and rates, every metric, thresholds, metrics over time
and an NYC LL144-style summary, as self-contained HTML (plots embedded as base64 PNG) or JSON (same numbers).

Why from the audit trail and not the live window: a bias audit covers a stated period (LL144: no older than one
year), must be reproducible from records that cannot be quietly edited, and must include decisions whose labels
arrived later. The exchange records carry the fairness section the stage wrote (group categories, the decision,
the score); ``feedback`` events carry the labels; both are joined here by audit id.

Input is any iterable of record dicts (as ``mlguard.audit.reader.AuditReader.iter_records`` yields them), so this
module is tested on plain lists. matplotlib is imported only when HTML is rendered.

What an auditor must not misread: a category under the minimum group size is "insufficient data", neither pass nor
fail of the four-fifths rule (29 CFR 1607.4(D); regulations.md), so its "below 4/5" is not assessed (``null``,
"n/a") rather than "no" next to a low ratio; the report names the policy each threshold comes from (the minimum
size is a policy parameter, not a law's); its period is the one asked for or, when none was, the dates of
the first and last decision it covers; and a status judged against no threshold at all (policies that set none,
such as gdpr and eu_ai_act alone) is "ok" only in the sense of "enough data": the report says so
(``thresholds_checked: []`` and ``status_detail``, at the top and per route, and in the HTML headings) rather
than let a bare "ok" stand next to an impact ratio of 0.7.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlguard.fairness.metrics import (
    LL144_RULE,
    NO_THRESHOLD_DETAIL,
    Thresholds,
    evaluate,
    is_catch_all,
    lowest_impact_ratio,
)
from mlguard.fairness.window import GroupSnapshot

MAX_PERIODS = 12
DEFAULT_SOURCE = "mlguard default"
"""Named as a threshold's source when no policy set it (``Thresholds`` defaults)."""


@dataclass(slots=True)
class _Decision:
    ts: str
    groups: list[str]
    favorable: bool
    score: float | None
    label: bool | None = None


@dataclass(slots=True)
class _RouteData:
    decisions: list[_Decision] = field(default_factory=list)
    policies: set[str] = field(default_factory=set)


def _dimension_of(key: str) -> str:
    return "|".join(p.split("=", 1)[0] for p in key.split("|"))


def _snapshot(decisions: Sequence[_Decision]) -> tuple[list[GroupSnapshot], list[str]]:
    """Per-group counts of ``decisions`` (as the live window keeps them), with LL144 scoring-rate counts."""
    counts: dict[str, list[int]] = {}
    order: list[str] = []
    scores = [d.score for d in decisions if d.score is not None]
    median = _median(scores) if scores else None
    for d in decisions:
        for key in d.groups:
            c = counts.get(key)
            if c is None:
                c = counts[key] = [0] * 9
                dim = _dimension_of(key)
                if dim not in order:
                    order.append(dim)
            c[0] += 1
            c[1] += d.favorable
            if d.label is not None:
                c[2] += 1
                idx = 3 if d.favorable and d.label else 4 if d.favorable else 6 if d.label else 5
                c[idx] += 1
            if d.score is not None and median is not None:
                c[8] += 1
                c[7] += d.score > median
    snap = [GroupSnapshot(k, _dimension_of(k), any(p.endswith("=unknown") for p in k.split("|")),
                          n=c[0], selected=c[1], labelled=c[2], tp=c[3], fp=c[4], tn=c[5], fn=c[6],
                          above_median=c[7] if median is not None else None, scored=c[8])
            for k, c in counts.items()]
    order.sort(key=lambda d: (d.count("|"), d))
    return snap, order


def _median(values: list[float]) -> float:
    o = sorted(values)
    m = len(o) // 2
    return o[m] if len(o) % 2 else (o[m - 1] + o[m]) / 2.0


def collect(records: Iterable[dict[str, Any]]) -> dict[str, _RouteData]:
    """Join exchange records (fairness section) with feedback events (labels), per route."""
    routes: dict[str, _RouteData] = {}
    by_id: dict[str, _Decision] = {}
    labels: dict[str, bool] = {}
    for rec in records:
        if rec.get("shredded") and rec.get("fairness") is None and rec.get("data") is None:
            continue
        kind = rec.get("kind")
        if kind == "feedback":
            data = rec.get("data") or {}
            target, label = data.get("decision"), data.get("label")
            if isinstance(target, str) and isinstance(label, bool):
                labels[target] = label
            continue
        if kind not in (None, "exchange"):
            continue
        sec = rec.get("fairness")
        if not isinstance(sec, dict) or not sec.get("counted") or not isinstance(sec.get("favorable"), bool):
            continue
        groups = [g for g in sec.get("groups") or [] if isinstance(g, str)]
        if not groups:
            continue
        score = sec.get("score")
        d = _Decision(str(rec.get("ts") or ""), groups, sec["favorable"],
                      float(score) if isinstance(score, int | float) and not isinstance(score, bool) else None)
        rd = routes.setdefault(str(rec.get("route") or ""), _RouteData())
        rd.decisions.append(d)
        pol = rec.get("policies")
        ids = pol.get("ids") if isinstance(pol, dict) else pol
        for p in ids if isinstance(ids, list) else []:
            pid = p.get("id") if isinstance(p, dict) else p
            if isinstance(pid, str):
                rd.policies.add(pid)
        aid = rec.get("audit_id")
        if isinstance(aid, str):
            by_id[aid] = d
    for aid, label in labels.items():
        dec = by_id.get(aid)
        if dec is not None:
            dec.label = label
    return routes


def build_report(records: Iterable[dict[str, Any]], *, thresholds: Thresholds | None = None,
                 since: str | None = None, until: str | None = None, source: str = "audit log",
                 periods: int = MAX_PERIODS, distribution_date: str | None = None,
                 threshold_sources: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """The whole report as plain JSON-ready data: one section per route.

    ``threshold_sources``: per threshold name, the policies it came from (``EffectivePolicy.origin``); a name
    missing there is reported as the built-in default."""
    th = thresholds or Thresholds()
    routes = collect(records)
    stamps = sorted(d.ts for rd in routes.values() for d in rd.decisions if d.ts)
    sources = threshold_sources or {}
    out: dict[str, Any] = {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source, "since": since, "until": until, "distribution_date": distribution_date,
        "first_decision": stamps[0] if stamps else None, "last_decision": stamps[-1] if stamps else None,
        "thresholds": th.as_dict(),
        "thresholds_checked": list(th.checked),
        "status_detail": None if th.checked else NO_THRESHOLD_DETAIL,
        "threshold_sources": {k: list(sources.get(k) or [DEFAULT_SOURCE]) for k in th.as_dict()},
        "routes": {},
    }
    for path, rd in sorted(routes.items()):
        decs = sorted(rd.decisions, key=lambda d: d.ts)
        snap, dims = _snapshot(decs)
        rep = evaluate(snap, dims, th)
        out["routes"][path] = {
            "policies": sorted(rd.policies),
            "first": decs[0].ts if decs else None, "last": decs[-1].ts if decs else None,
            "status": rep.status, "status_detail": rep.status_detail,
            "thresholds_checked": list(th.checked), "decisions": len(decs),
            "labelled": sum(d.label is not None for d in decs),
            "groups": [_group_row(g) for g in sorted(snap, key=lambda g: (g.dimension.count("|"), g.key))],
            "metrics": rep.as_dict()["dimensions"],
            "ll144": _ll144(rep.as_dict()["dimensions"], th, out["threshold_sources"]["min_group_size"]),
            "over_time": _over_time(decs, dims, th, periods),
        }
    return out


def _group_row(g: GroupSnapshot) -> dict[str, Any]:
    pos, neg = g.tp + g.fn, g.fp + g.tn
    return {"group": g.key, "dimension": g.dimension, "unknown": g.unknown, "n": g.n, "selected": g.selected,
            "selection_rate": g.selected / g.n if g.n else None, "labelled": g.labelled,
            "tp": g.tp, "fp": g.fp, "tn": g.tn, "fn": g.fn,
            "tpr": g.tp / pos if pos else None, "fpr": g.fp / neg if neg else None,
            "fnr": g.fn / pos if pos else None,
            "scoring_rate": (g.above_median / g.scored) if g.above_median is not None and g.scored else None}


def _ll144(dims: dict[str, Any], th: Thresholds, min_size_from: Sequence[str]) -> dict[str, Any]:
    """The LL144 summary: per dimension, counts per category, unknowns, exclusions, rates and impact ratios.

    A category under ``min_group_size`` has ``below_four_fifths: null``: the rule is not applied to it (see the
    module docstring), whatever its ratio; nor to ``other``, the bucket of values that are no declared category.
    Each dimension names its ``reference``, the group the impact ratios are measured against (the most selected
    eligible one, ``mlguard.fairness.metrics.reference_group``), null when none is eligible."""
    out: dict[str, Any] = {"rule": LL144_RULE, "warn_below": th.min_impact_ratio,
                           "min_group_size": th.min_group_size, "min_group_size_from": list(min_size_from),
                           "dimensions": {}}
    for dim, d in dims.items():
        cats = []
        for r in d["impact"]:
            c = {k: r[k] for k in ("group", "n", "share", "selection_rate", "selection_impact_ratio",
                                   "scoring_rate", "scoring_impact_ratio", "excluded", "justification",
                                   "insufficient", "below_four_fifths", "p_value", "p_adjusted", "significant",
                                   "eligible", "reference")}
            if c["insufficient"] or is_catch_all(c["group"]):
                c["below_four_fifths"] = None
            cats.append(c)
        out["dimensions"][dim] = {"total": d["total"], "unknown": d["unknown"], "reference": d["reference"],
                                  "categories": cats}
    return out


def _over_time(decs: Sequence[_Decision], dims: Sequence[str], th: Thresholds, periods: int
               ) -> list[dict[str, Any]]:
    """Metrics per period (equal numbers of decisions per period, in time order), over each period's eligible
    groups only (``mlguard.fairness.metrics.eligibility``: the minimum group size, the exclusion share, no
    ``other`` or ``unknown``), judged by the same rule as the whole report.

    Why not over all groups: a period is a few hundred decisions, so it nearly always holds an ``unknown`` group
    or a group of one or two; over those, every period read "violation" with a lowest impact ratio of 0.0 and a
    parity difference of 1.0, which said nothing about the groups that can be judged. A dimension with no
    eligible group in a period says so in ``detail``, its figures null. Periods hold at least twice
    ``min_group_size`` decisions (fewer periods when there are not enough): shorter ones (there were periods of
    ``min_group_size`` decisions) cannot hold two eligible groups."""
    if not decs:
        return []
    # at least two minimum-size groups' worth of decisions per period: a shorter one can compare nothing
    k = max(1, min(periods, len(decs) // max(1, 2 * th.min_group_size) or 1))
    size = math.ceil(len(decs) / k)
    out = []
    for i in range(0, len(decs), size):
        chunk = decs[i:i + size]
        snap, _ = _snapshot(chunk)
        rep = evaluate(snap, dims, th)
        row: dict[str, Any] = {"from": chunk[0].ts, "to": chunk[-1].ts, "decisions": len(chunk),
                               "status": rep.status, "dimensions": {}}
        for dim, dr in rep.dimensions.items():
            m = dr.eligible.as_dict()
            row["dimensions"][dim] = {
                "eligible_groups": m["groups"], "reference": dr.reference,
                "selection_rate": m["selection_rate"], "fpr": m["fpr"], "tpr": m["tpr"],
                "demographic_parity_difference": m["demographic_parity_difference"],
                "equalized_odds_difference": m["equalized_odds_difference"],
                "min_impact_ratio": lowest_impact_ratio(dr.impact),
                "detail": _period_detail(len(m["groups"]), th),
            }
        out.append(row)
    return out


def _period_detail(eligible: int, th: Thresholds) -> str | None:
    """Why a period's figures of one dimension are null, when they are; None when two or more groups compare."""
    if eligible >= 2:
        return None
    rule = (f"at least {th.min_group_size} decisions"
            + (f" and {th.exclude_below_share:.0%} of the period's" if th.exclude_below_share > 0 else "")
            + ", a declared category (not other or unknown)")
    if eligible == 0:
        return f"no group is eligible in this period ({rule}): no figure"
    return f"one group is eligible in this period ({rule}): nothing to compare"


# ---------------------------------------------------------------------------------------------- rendering

def render_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=False, default=str)


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.2%}" if pct else f"{v:.4f}"
    return html.escape(str(v))


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _plot(over_time: list[dict[str, Any]], dim: str, key: str, title: str, ylabel: str) -> str | None:
    """One line per group (or one line for a scalar metric) over the periods, as a base64 PNG <img>."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = list(range(1, len(over_time) + 1))
    series: dict[str, list[float]] = {}
    for i, row in enumerate(over_time):
        val = row["dimensions"].get(dim, {}).get(key)
        if isinstance(val, dict):
            for g, v in val.items():
                series.setdefault(g, [math.nan] * len(over_time))[i] = math.nan if v is None else v
        else:
            series.setdefault(key, [math.nan] * len(over_time))[i] = math.nan if val is None else val
    if not series or all(all(math.isnan(v) for v in s) for s in series.values()):
        return None
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=90)
    for name, ys in sorted(series.items())[:12]:
        ax.plot(xs, ys, marker="o", markersize=3, label=name)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("period (equal numbers of decisions, in time order)")
    ax.set_xticks(xs)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'


_CSS = ("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:.5em 0 1.5em}"
        "td,th{border:1px solid #bbb;padding:3px 7px;font-size:13px;text-align:right}th{background:#eee}"
        "td:first-child{text-align:left}.violation{color:#b00}.warn{color:#b60}.ok{color:#070}")


def _period(report: dict[str, Any]) -> str:
    """The period as asked (``--since/--until``), each open end replaced by the date of the first or last decision
    reported, and those dates themselves."""
    first, last = report.get("first_decision"), report.get("last_decision")
    if first is None:
        start, end = report["since"] or "start", report["until"] or "end"
        return f"period {_fmt(start)} to {_fmt(end)} (no decisions)"
    start = report["since"] or first
    end = report["until"] or last
    return f"period {_fmt(start)} to {_fmt(end)} (decisions reported from {_fmt(first)} to {_fmt(last)})"


def render_html(report: dict[str, Any]) -> str:
    """A self-contained HTML page (no external assets)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>mlguard fairness report</title>"
             f"<style>{_CSS}</style></head><body><h1>mlguard fairness report</h1>"]
    th = report["thresholds"]
    parts.append(f"<p>Generated {_fmt(report['generated'])} from {_fmt(report['source'])}; {_period(report)}; "
                 f"tool distribution date {_fmt(report['distribution_date'])}.</p>")
    sources = report.get("threshold_sources") or {}
    parts.append("<h2>Thresholds</h2>" + _table(
        ["parameter", "value", "set by"],
        [[html.escape(k), _fmt(v), _fmt(", ".join(sources.get(k) or [DEFAULT_SOURCE]))] for k, v in th.items()]))
    if report.get("status_detail"):
        parts.append(f"<p class='warn'><b>No threshold set.</b> {_fmt(report['status_detail'])}.</p>")
    for path, r in report["routes"].items():
        unchecked = " (no threshold set: nothing checked)" if r.get("status_detail") else ""
        parts.append(f"<h2>Route {html.escape(path)}: <span class='{r['status']}'>{r['status']}{unchecked}"
                     "</span></h2>")
        parts.append(f"<p>{r['decisions']} decisions ({r['labelled']} labelled), {_fmt(r['first'])} to "
                     f"{_fmt(r['last'])}; policies {html.escape(', '.join(r['policies']) or 'n/a')}.</p>")
        parts.append("<h3>Per group</h3>" + _table(
            ["group", "n", "selected", "selection rate", "labelled", "TPR", "FPR", "FNR", "scoring rate"],
            [[_fmt(g["group"]), _fmt(g["n"]), _fmt(g["selected"]), _fmt(g["selection_rate"], True),
              _fmt(g["labelled"]), _fmt(g["tpr"], True), _fmt(g["fpr"], True), _fmt(g["fnr"], True),
              _fmt(g["scoring_rate"], True)] for g in r["groups"]]))
        parts.append("<h3>Metrics (fairlearn definitions, between groups)</h3>")
        rows = []
        for dim, d in r["metrics"].items():
            for scope in ("all_groups", "eligible"):
                m = d[scope]
                rows.append([_fmt(dim), scope.replace("_", " "), _fmt(m["demographic_parity_difference"]),
                             _fmt(m["demographic_parity_ratio"]), _fmt(m["equalized_odds_difference"]),
                             _fmt(m["equalized_odds_ratio"]), f"<span class='{d['status']}'>{d['status']}</span>"])
        parts.append(_table(["dimension", "groups", "DP difference", "DP ratio", "EO difference", "EO ratio",
                             "status"], rows))
        breaches = [(dim, b) for dim, d in r["metrics"].items() for b in d["breaches"]]
        if breaches:
            parts.append("<h3>Breaches</h3>" + _table(
                ["dimension", "metric", "group", "value", "threshold", "p-value", "adjusted p", "significant"],
                [[_fmt(dim), _fmt(b["metric"]), _fmt(b.get("group")), _fmt(b["value"]), _fmt(b["threshold"]),
                  _fmt(b["p_value"]), _fmt(b.get("p_adjusted")), _fmt(b["significant"])] for dim, b in breaches]))
        ll = r["ll144"]
        parts.append(f"<h3>NYC LL144 summary ({html.escape(ll['rule'])})</h3>")
        parts.append(f"<p>A category with fewer than {_fmt(ll['min_group_size'])} decisions (minimum group size, "
                     f"set by {_fmt(', '.join(ll['min_group_size_from']))}) is reported as insufficient data: the "
                     "four-fifths rule is neither passed nor failed (n/a), whatever its impact ratio.</p>")
        for dim, d in r["ll144"]["dimensions"].items():
            ref = (f"impact ratios against {_fmt(d['reference'])}, the most selected eligible category"
                   if d.get("reference") else "no eligible category: no impact ratio")
            parts.append(f"<p><b>{html.escape(dim)}</b>: {d['total']} decisions (one person applying "
                         f"twice counts twice), {d['unknown']} of unknown category; {ref}.</p>")
            parts.append(_table(
                ["category", "n", "share", "selection rate", "impact ratio", "scoring rate", "scoring IR",
                 "excluded (justification)", "insufficient", "below 4/5", "p-value"],
                [[_fmt(c["group"]), _fmt(c["n"]), _fmt(c["share"], True), _fmt(c["selection_rate"], True),
                  _fmt(c["selection_impact_ratio"]), _fmt(c["scoring_rate"], True), _fmt(c["scoring_impact_ratio"]),
                  _fmt(c["justification"]) if c["excluded"] else "no", _fmt(c["insufficient"]),
                  "n/a (insufficient data)" if c["insufficient"]
                  else "n/a (not a category)" if is_catch_all(c["group"]) else _fmt(c["below_four_fifths"]),
                  _fmt(c["p_value"])] for c in d["categories"]]))
        if len(r["over_time"]) > 1:
            parts.append("<h3>Over time</h3>")
            for dim in r["metrics"]:
                for key, title, ylabel in (
                        ("selection_rate", f"selection rate by {dim}", "rate"),
                        ("demographic_parity_difference", f"demographic parity difference ({dim})", "difference"),
                        ("min_impact_ratio", f"lowest impact ratio ({dim})", "ratio"),
                        ("fpr", f"false positive rate by {dim}", "rate")):
                    img = _plot(r["over_time"], dim, key, title, ylabel)
                    if img:
                        parts.append(img)
    parts.append("</body></html>")
    return "\n".join(parts)


__all__ = ["build_report", "collect", "render_html", "render_json"]
