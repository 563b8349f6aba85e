"""The credit-scoring example: its model, its unguarded FastAPI app and its committed data files.

The guarded ``app`` is tested with the middleware; here only what the example itself promises. Every test uses
a temporary model cache (MLGUARD_EXAMPLE_CACHE), so nothing is written into the repository.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from examples.credit_scoring import model as model_mod
from examples.credit_scoring.make_requests import (
    FIRST_NAMES_FEMALE,
    FIRST_NAMES_MALE,
    LAST_NAMES,
    build_requests,
)
from examples.credit_scoring.make_requests import OUT as REQUESTS_FILE
from examples.credit_scoring.make_sample import background_rows
from examples.credit_scoring.model import BACKGROUND_CSV, FEATURES, SAMPLE_CSV

EXAMPLE_DIR = Path(model_mod.__file__).parent
PROTECTED = {"sex", "race", "age", "marital_status", "native_country", "relationship"}


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One temporary cache for the module, so the model is trained once for all app tests."""
    path = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(model_mod.CACHE_ENV, str(path))
        yield path


@pytest.fixture
def one_request() -> dict[str, Any]:
    line = REQUESTS_FILE.read_text(encoding="utf-8").splitlines()[0]
    body: dict[str, Any] = json.loads(line)
    return body


@pytest.fixture
async def client(model_cache: Path) -> AsyncIterator[httpx.AsyncClient]:
    from examples.credit_scoring.app import model_app

    transport = httpx.ASGITransport(app=model_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


# --- model --------------------------------------------------------------------------------------------------


def test_no_protected_attribute_is_a_feature() -> None:
    assert not PROTECTED & set(FEATURES)
    assert set(model_mod.EXCLUDED_COLUMNS) >= PROTECTED
    assert len(FEATURES) == len(set(FEATURES))


def test_training_is_deterministic_and_predicts_probabilities() -> None:
    x, y = model_mod.load_dataset(SAMPLE_CSV)
    first, second = model_mod.train_model(), model_mod.train_model()
    p1, p2 = first.predict_proba(x), second.predict_proba(x)
    assert np.array_equal(p1, p2)
    assert p1.shape == (len(y), 2)
    assert np.all((p1 >= 0) & (p1 <= 1))
    assert np.allclose(p1.sum(axis=1), 1.0)
    assert first.n_features_in_ == len(FEATURES)
    assert first.n_estimators == 100 and first.max_depth == 3
    # Not a constant predictor: it ranks the held-out part far better than chance.
    from sklearn.metrics import roc_auc_score

    _, x_hold, _, y_hold = model_mod.split_dataset(x, y)
    assert roc_auc_score(y_hold, first.predict_proba(x_hold)[:, 1]) > 0.75


def test_load_model_trains_once_then_uses_the_disk_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(model_mod.CACHE_ENV, str(tmp_path))
    fitted = model_mod.load_model()
    assert model_mod.load_model() is fitted  # memoised per process
    files = list(tmp_path.glob("credit-gbc-*.joblib"))
    assert files == [model_mod.cache_file()]

    def no_training() -> None:
        raise AssertionError("retrained although a cache file exists")

    monkeypatch.setattr(model_mod, "train_model", no_training)
    reloaded = model_mod._load_or_train(files[0])
    x, _ = model_mod.load_dataset(SAMPLE_CSV)
    assert np.array_equal(reloaded.predict_proba(x[:50]), fitted.predict_proba(x[:50]))


def test_a_corrupt_cache_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(model_mod.CACHE_ENV, str(tmp_path))
    path = model_mod.cache_file()
    path.write_bytes(b"not a pickle")
    rebuilt = model_mod._load_or_train(path)
    assert rebuilt.n_features_in_ == len(FEATURES)
    assert model_mod._load_or_train(path).n_features_in_ == len(FEATURES)  # the rewritten file loads


def test_mlguard_yaml_matches_the_model() -> None:
    """The guard's binding must name the model's real columns, background file and loader."""
    import yaml

    from examples.credit_scoring.app import CONFIG_PATH

    config = yaml.safe_load(CONFIG_PATH.read_text(encoding="utf-8"))
    (route,) = config["routes"]
    binding = route["model"]
    assert binding["feature_order"] == FEATURES
    assert binding["object"] == "examples.credit_scoring.model:load_model"
    assert (CONFIG_PATH.parent / binding["background"]).resolve() == BACKGROUND_CSV
    assert set(config["explain"]["reason_catalog"]) == set(FEATURES)
    assert set(route["protected"]) == {"sex", "race"}
    assert config["policies"] == ["gdpr", "ecoa"]


def test_default_cache_is_inside_the_example_and_git_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(model_mod.CACHE_ENV, raising=False)
    assert model_mod.cache_dir() == EXAMPLE_DIR / ".model-cache"
    ignored = (EXAMPLE_DIR / ".gitignore").read_text().split()
    assert ".model-cache/" in ignored


# --- committed data -----------------------------------------------------------------------------------------


def test_sample_and_background_files() -> None:
    sample_lines = SAMPLE_CSV.read_text(encoding="utf-8").splitlines()
    assert sample_lines[0].startswith("age,workclass,")
    assert len(sample_lines) == 3001
    background = BACKGROUND_CSV.read_text(encoding="utf-8").splitlines()
    assert background[0].split(",") == FEATURES
    # background.csv is exactly what make_sample derives from the committed sample (fixed seed).
    assert [line.split(",") for line in background[1:]] == background_rows()
    attribution = (EXAMPLE_DIR / "data" / "ATTRIBUTION.md").read_text()
    assert "https://creativecommons.org/licenses/by/4.0/" in attribution


def test_sample_requests_are_reproducible_and_varied() -> None:
    lines = REQUESTS_FILE.read_text(encoding="utf-8").splitlines()
    bodies = [json.loads(line) for line in lines]
    assert len(bodies) >= 120
    assert bodies == build_requests()
    assert len({b["applicant"]["id"] for b in bodies}) == len(bodies)
    notes = [b["note"] for b in bodies if "note" in b]
    assert 0 < len(bodies) - len(notes) < 10
    assert all(100 <= len(n) <= 250 for n in notes)
    pii_notes = [n for n in notes if _carries_pii(n)]
    assert len(bodies) // 4 <= len(pii_notes) <= len(bodies) // 2
    tlds = {b["applicant"]["email"].rsplit(".", 1)[1] for b in bodies}
    assert {"example", "internal", "io"} <= tlds
    assert all(b["applicant"]["ssn"][0] == "9" for b in bodies)
    assert {b["applicant"].get("sex") for b in bodies} == {"Male", "Female", None}


def _carries_pii(note: str) -> bool:
    """A note with an e-mail address, a (fictional 555) phone number, a ZIP code or a full name in it."""
    names = [f"{first} {last}" for first in FIRST_NAMES_FEMALE + FIRST_NAMES_MALE for last in LAST_NAMES]
    return bool(re.search(r"@|555|\b[A-Z]{2} \d{5}\b", note)) or any(name in note for name in names)


# --- the unguarded app --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_predict_answers_score_and_approved(
    client: httpx.AsyncClient, one_request: dict[str, Any]
) -> None:
    response = await client.post("/predict", json=one_request)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"score", "approved"}
    assert 0.0 <= body["score"] <= 1.0
    assert body["approved"] is (body["score"] >= 0.5)
    fitted = model_mod.load_model()
    row = np.array([[one_request["features"][f] for f in FEATURES]])
    assert body["score"] == pytest.approx(float(fitted.predict_proba(row)[0, 1]), abs=1e-12)


@pytest.mark.anyio
async def test_predict_accepts_redacted_or_missing_personal_fields(
    client: httpx.AsyncClient, one_request: dict[str, Any]
) -> None:
    """What the guard may hand on: placeholders, dropped fields, a generalised (numeric) value, no note."""
    expected = (await client.post("/predict", json=one_request)).json()
    redacted = {
        "applicant": {"id": one_request["applicant"]["id"], "name": "<PERSON>", "dob": 1984, "race": "<R>"},
        "features": one_request["features"],
    }
    response = await client.post("/predict", json=redacted)
    assert response.status_code == 200
    assert response.json() == expected


@pytest.mark.anyio
@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda b: b["features"].pop(FEATURES[0]), id="missing-feature"),
        pytest.param(lambda b: b.pop("features"), id="missing-features"),
        pytest.param(lambda b: b["applicant"].pop("id"), id="missing-id"),
        pytest.param(lambda b: b["features"].__setitem__(FEATURES[1], "many"), id="non-numeric"),
        pytest.param(lambda b: b["features"].__setitem__("sex", 1.0), id="unknown-feature"),
    ],
)
async def test_invalid_application_is_422(
    client: httpx.AsyncClient, one_request: dict[str, Any], mutate: Any
) -> None:
    mutate(one_request)
    response = await client.post("/predict", json=one_request)
    assert response.status_code == 422


@pytest.mark.anyio
async def test_every_sample_request_is_accepted(client: httpx.AsyncClient) -> None:
    lines = REQUESTS_FILE.read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 120
    approved = 0
    for line in lines:
        response = await client.post("/predict", content=line, headers={"content-type": "application/json"})
        assert response.status_code == 200, response.text
        approved += response.json()["approved"]
    assert 0 < approved < len(lines)  # both outcomes occur, so fairness and reason codes have work to do


@pytest.mark.anyio
async def test_health(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_importing_the_app_does_not_build_the_guard() -> None:
    """``model_app`` alone (the bare benchmark side) must not pay for the guard, presidio, shap or sklearn."""
    heavy = ("mlguard.middleware", "shap", "presidio_analyzer", "sklearn")
    code = (
        "import sys, examples.credit_scoring.app as m; assert m.model_app is not None; "
        f"print(sorted(k for k in {heavy!r} if k in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=EXAMPLE_DIR.parents[1]
    )
    assert out.stdout.strip() == "[]"
