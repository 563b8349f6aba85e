"""``mlguard explain AUDIT_ID``: the plain-language explanation of one sealed decision.

Why a command: the person a decision concerns may ask for it weeks later (GDPR Art 15, Reg B 1002.9); the
operator answers from the sealed audit record, not from a log. With ``--config`` the route's model is loaded to
also say which single changes would have altered the result, when the route's effective policy asks for that
(``explanations.counterfactuals``), and never a change to a prohibited basis or protected attribute: the same
rules as ``GET {prefix}/explanations/ID/plain``, so the two never tell the person different things.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mlguard.cli._root import cli


@cli.command("explain")
@click.argument("audit_id")
@click.option("--store", "store_url", required=True, help="Audit store URL (sqlite:///... or postgresql://...).")
@click.option("--keyring", "keyring", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Keyring file (default: env MLGUARD_KEYRING).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="mlguard.yaml: load the route's model to find changes that alter the result.")
@click.option("--json", "as_json", is_flag=True, help="Print the sealed explanation as JSON instead of text.")
def explain_command(audit_id: str, store_url: str, keyring: Path | None, config_path: Path | None,
                    as_json: bool) -> None:
    """Render the explanation of decision AUDIT_ID in plain language.

    Exit codes: 0 rendered; 1 no such record, or it holds no explanation (shredded, refused request);
    2 usage error.
    """
    import json

    from mlguard.errors import MLGuardError

    try:
        from mlguard.audit.reader import AuditReader
    except ImportError as exc:  # the audit area is not part of this build
        raise click.UsageError(f"the audit reader is not available ({exc.name})") from None
    try:
        reader = AuditReader(store_url, keyring)
    except MLGuardError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        record = reader.get(audit_id)
        if record is None:
            click.echo(f"no audit record {audit_id}", err=True)
            raise click.exceptions.Exit(1)
        explanation = _explanation_of(reader, record)
    finally:
        reader.close()
    if record.get("shredded"):
        click.echo(f"record {audit_id} was erased (crypto-shredded); nothing to explain", err=True)
        raise click.exceptions.Exit(1)
    if not isinstance(explanation, dict):
        click.echo(f"record {audit_id} holds no explanation", err=True)
        raise click.exceptions.Exit(1)
    if as_json:
        click.echo(json.dumps(explanation, indent=2, sort_keys=True))
        return
    changes, catalog = _changes(config_path, record, explanation)
    if config_path is None and explanation.get("status") == "ready":
        # the reasons' texts are sealed in the record (the catalogue is only a fallback for records without them):
        # what is missing without the config is the model, to search for a change that alters the result
        click.echo("note: without --config (the service's mlguard.yaml, to load the model) the text has no "
                   "'What would have changed the result' section (given where the policy asks for it); "
                   "GET {prefix}/explanations/ID/plain has it", err=True)
    from mlguard.explain.render import render_plain

    click.echo(render_plain(explanation, changes=changes, catalog=catalog, audit_id=audit_id), nl=False)


def _explanation_of(reader: Any, record: dict[str, Any]) -> Any:
    """The record's explanation; a deferred one is looked up in the event appended when it was ready."""
    explanation = record.get("explanation")
    if not (isinstance(explanation, dict) and explanation.get("status") == "pending"):
        return explanation
    return reader.deferred_explanation(record) or explanation


def _changes(config_path: Path | None, record: dict[str, Any], explanation: dict[str, Any]
             ) -> tuple[list[dict[str, Any]] | None, dict[str, str] | None]:
    if config_path is None:
        return None, None
    from mlguard.config import load_config
    from mlguard.errors import ConfigError
    from mlguard.explain.binding import build_binding
    from mlguard.explain.render import counterfactuals
    from mlguard.explain.route import ReasonPolicy
    from mlguard.runtime import check_config, located

    try:
        config = load_config(config_path)
        compiled = check_config(config, file=config_path).routes  # each route's effective policy, as served
    except ConfigError as exc:  # the file's content is wrong: exit 1 like serve and config check
        raise located(exc, config_path) from None
    for index, route in enumerate(config.routes):
        if route.path == record.get("route") and route.model is not None and route.model.object is not None:
            if explanation.get("status") != "ready":
                return None, config.explain.reason_catalog
            rules = ReasonPolicy.of(compiled[index].policy, list(compiled[index].protected))
            if not rules.counterfactuals:
                click.echo("note: the route's effective policy does not ask for counterfactuals "
                           "(explanations.counterfactuals: false); no 'What would have changed the result' "
                           "section", err=True)
                return None, config.explain.reason_catalog
            try:
                binding = build_binding(index, route.model, base_dir=config.base_dir)
            except ConfigError as exc:
                raise located(exc, config_path) from None
            inputs = explanation.get("inputs")
            if not isinstance(inputs, dict):  # a deferred explanation: rebuild from the sealed (redacted) input
                inputs = binding.build_row(record.get("input")).values
                if inputs is None:
                    return None, config.explain.reason_catalog
                explanation["inputs"] = inputs
            changes = counterfactuals(binding, inputs, explanation,
                                      max_features=config.explain.counterfactual_features,
                                      prohibited=rules.prohibited)
            return changes, config.explain.reason_catalog
    click.echo(f"route {record.get('route')!r} has no model object in {config_path}; changes not searched",
               err=True)
    return None, config.explain.reason_catalog
