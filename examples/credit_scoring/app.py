"""The example credit-scoring service: an ordinary FastAPI model endpoint, and the same endpoint guarded.

* ``model_app``: the service as its authors would write it, knowing nothing of mlguard.
  ``POST /predict`` scores an application, ``GET /health`` says whether it is up.
* ``app``: ``GuardMiddleware(model_app, config=CONFIG_PATH)``, i.e. the same service behind mlguard, driven by
  ``mlguard.yaml`` beside this file.

Run it bare with ``uvicorn examples.credit_scoring.app:model_app`` and guarded with
``uvicorn examples.credit_scoring.app:app`` or ``mlguard serve examples/credit_scoring/mlguard.yaml
examples.credit_scoring.app:model_app``.

Why ``app`` is built on first access (PEP 562 module ``__getattr__``) rather than at import: building the
guard loads its policies and heavy engines (presidio and spaCy, shap). Importing this module for ``model_app``
alone, as the bare side of the benchmarks and the app's own tests do, should cost none of that. ``from
examples.credit_scoring.app import app`` and uvicorn's ``module:app`` lookup both go through ``__getattr__``,
so to every user ``app`` looks like a plain module attribute.

Why the applicant's personal fields are all optional strings whose content is ignored: under the ``gdpr`` and
``ecoa`` policies the guard redacts or drops them (``sex`` and ``race`` never reach the model), so the app
must accept them missing or replaced by a placeholder. The model sees only ``features``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio.to_thread
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, create_model

from examples.credit_scoring.model import FEATURES, load_model

if TYPE_CHECKING:
    from sklearn.ensemble import GradientBoostingClassifier

CONFIG_PATH: Final = Path(__file__).resolve().with_name("mlguard.yaml")
#: The probability of approval at or above which an application is approved.
APPROVAL_THRESHOLD: Final = 0.5


class Applicant(BaseModel):
    """Who applies. Only ``id`` is required; the rest may be absent, redacted or replaced by a placeholder."""

    # Numbers are accepted as text so a guard that generalises a value (e.g. a date of birth to a year) never
    # turns a valid request into a 422.
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    id: str = Field(min_length=1)
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    ssn: str | None = None
    address: str | None = None
    dob: str | None = None
    sex: str | None = None
    race: str | None = None


#: scikit-learn's trees cast their input to float32; a larger value becomes infinity there and the model fails.
FLOAT32_MAX: Final = float(np.finfo(np.float32).max)

# One required, finite float per model feature, built from FEATURES so the schema can never drift from the
# model. Unknown features are refused (422): a feature the model does not know is a client error, not
# something to drop. Values beyond float32 are refused too (422), rather than crashing the model (500).
Features = create_model(
    "Features",
    __config__=ConfigDict(extra="forbid"),
    **{name: (float, Field(allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX))  # type: ignore[call-overload]
       for name in FEATURES},
)


class Application(BaseModel):
    """The body of ``POST /predict``."""

    model_config = ConfigDict(extra="ignore")

    applicant: Applicant
    features: Features
    note: str | None = None


class Decision(BaseModel):
    """The answer: the probability of approval and the decision taken at ``APPROVAL_THRESHOLD``."""

    score: float
    approved: bool


class _ModelHolder:
    """Loads the model once, off the event loop; the first request may pay for training (about a second)."""

    def __init__(self) -> None:
        self._model: GradientBoostingClassifier | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    async def get(self) -> GradientBoostingClassifier:
        model = self._model
        if model is None:
            model = await anyio.to_thread.run_sync(self._load)
        return model

    def _load(self) -> GradientBoostingClassifier:
        with self._lock:
            if self._model is None:
                self._model = load_model()
            return self._model


_holder = _ModelHolder()


@asynccontextmanager
async def _lifespan(_: FastAPI) -> AsyncIterator[None]:
    """Warm the model at start-up under a server, so the first request does not wait for it."""
    await _holder.get()
    yield


model_app = FastAPI(
    title="Credit scoring example",
    summary="A gradient-boosted credit model (UCI Adult income >50K as the approval proxy).",
    version="1.0.0",
    lifespan=_lifespan,
)


@model_app.post("/predict", response_model=Decision)
async def predict(application: Application) -> Decision:
    """Score one application from its ``features``; personal fields and the note are not used by the model."""
    model = await _holder.get()
    values = application.features.model_dump()
    row = np.array([[values[name] for name in FEATURES]], dtype=np.float64)
    # A single 100-tree prediction takes well under a millisecond: cheaper inline than a thread hop.
    score = float(model.predict_proba(row)[0, 1])
    return Decision(score=score, approved=score >= APPROVAL_THRESHOLD)


@model_app.get("/health")
async def health() -> dict[str, Any]:
    """Liveness, and whether the model is loaded yet."""
    return {"status": "ok", "model_loaded": _holder.loaded}


@functools.cache
def _guarded_app() -> Any:
    from mlguard.middleware import GuardMiddleware

    return GuardMiddleware(model_app, config=CONFIG_PATH)


def __getattr__(name: str) -> Any:
    # app = GuardMiddleware(model_app, config=CONFIG_PATH), built on first access (see the module docstring).
    if name == "app":
        return _guarded_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
