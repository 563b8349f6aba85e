"""The credit-scoring example's adverse-action reasons are true of the applicant they are given to.

A reason is cited because the applicant's own value, high, low or zero, pushed the score down relative to the
average applicant (SHAP), so its text must name the factor without asserting which way the value lies: the
catalogue once said "Investment losses reported" to applicants who reported none. Checked here over every
refusal of the committed sample requests, with the route built exactly as the guard builds it (the example's
mlguard.yaml, its composed policies), and over the catalogue itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from examples.credit_scoring import model as model_mod
from examples.credit_scoring.make_requests import OUT as REQUESTS_FILE

# Wordings that assert something about the applicant's own value, and what the value must then be. Deliberately
# about the words, not the model: whatever the model cites, a text must not say what the input contradicts.
CLAIMS: list[tuple[str, Callable[[float, float], bool]]] = [
    (r"\b(reported|incurred|received|has|had|with)\b", lambda value, typical: value != 0),
    (r"\b(no|none|without|lack of|absence of)\b", lambda value, typical: value == 0),
    (r"\b(too high|excessive|high|large|many)\b", lambda value, typical: value > typical),
    (r"\b(too low|insufficient|limited|low|small|few|short)\b", lambda value, typical: value < typical),
]


Refusal = tuple[dict[str, float], dict[str, Any]]  # a refused request's features, and its explanation


@pytest.fixture(scope="module")
def refusals(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, list[Refusal]]]:
    """The example's route explainer and, for each refused sample request, its features and explanation."""
    from examples.credit_scoring.app import CONFIG_PATH
    from mlguard.config import load_config
    from mlguard.explain.route import build_route_explainer
    from mlguard.runtime import check_config

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(model_mod.CACHE_ENV, str(tmp_path_factory.mktemp("model-cache")))
        config = load_config(CONFIG_PATH)
        (route,) = check_config(config, file=CONFIG_PATH).routes
        assert config.routes[0].model is not None
        rx = build_route_explainer(0, config.routes[0].model, route.policy, config.explain,
                                   base_dir=config.base_dir, protected=list(route.protected))
        rows = [{k: float(v) for k, v in json.loads(line)["features"].items()}
                for line in Path(REQUESTS_FILE).read_text(encoding="utf-8").splitlines()]
        scores = rx.binding.score(rx.binding.matrix(rows))
        adverse = [rx.binding.favorable_score(float(s)) is False for s in scores]
        entries = rx.explain_many(rows, adverse)
        yield rx, [(row, e.public) for row, e, a in zip(rows, entries, adverse, strict=True) if a]


def _typical(rx: Any, feature: str) -> float:
    """The background median of a feature: what "high" and "low" would be measured against."""
    import numpy as np

    column = rx.binding.background.all_rows[:, rx.binding.feature_order.index(feature)]
    return float(np.median(column))


def test_no_refused_applicant_is_given_a_reason_its_own_input_contradicts(refusals: Any) -> None:
    rx, refused = refusals
    assert refused, "the sample holds refusals"
    cited: set[str] = set()
    false = []
    for row, exp in refused:
        assert exp["reasons"] and exp["reasons_incomplete"] is False  # no prohibited basis is a model input here
        for reason in exp["reasons"]:
            feature, text = reason["feature"], reason["text"].lower()
            cited.add(feature)
            for pattern, holds in CLAIMS:
                if re.search(pattern, text) and not holds(row[feature], _typical(rx, feature)):
                    false.append((feature, reason["text"], pattern))
    assert not false, sorted(set(false))
    assert cited & {"capital_gain", "capital_loss"}  # the investment amounts are among what the check covered


def test_every_catalogue_text_names_the_factor_not_a_direction(refusals: Any) -> None:
    """Any feature may be cited for a value on either side of the average (a zero below it, a large amount above
    it), so no text may take a side, whether or not this sample happens to cite it that way."""
    rx, _ = refusals
    catalogue = rx.settings.reason_catalog
    assert set(catalogue) == set(rx.binding.feature_order)
    for feature, text in catalogue.items():
        claims = [p for p, _ in CLAIMS if re.search(p, text.lower())]
        assert not claims, (feature, text, claims)
