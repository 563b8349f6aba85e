"""The example hiring-screen service: a plain FastAPI endpoint, and the same endpoint guarded.

* ``model_app``: ``POST /screen`` scores a candidate from years of experience, skills and an assessment and says
  whether they advance to an interview. It knows nothing of mlguard and needs no model object: a rule is enough
  for an automated employment decision tool under NYC Local Law 144.
* ``app``: ``GuardMiddleware(model_app, config=CONFIG_PATH)``, built on first access (PEP 562 ``__getattr__``),
  so importing ``model_app`` alone costs nothing of the guard.

Run: ``MLGUARD_ADMIN_TOKEN=secret uvicorn examples.hiring_screen.app:app`` then
``python -m examples.hiring_screen.simulate --url http://127.0.0.1:8000`` or, in-process,
``python -m examples.hiring_screen.simulate``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

CONFIG_PATH: Final = Path(__file__).resolve().with_name("mlguard.yaml")
#: Candidates scoring at or above this advance to an interview.
ADVANCE_AT: Final = 0.5
REQUIRED_SKILLS: Final = frozenset({"python", "sql", "statistics"})


class Candidate(BaseModel):
    """Who applies. Personal fields may arrive redacted; sex and race never arrive (the guard removes them)."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1)
    name: str | None = None
    email: str | None = None
    phone: str | None = None


class Application(BaseModel):
    model_config = ConfigDict(extra="ignore")

    candidate: Candidate
    years_experience: float = Field(ge=0, le=60)
    skills: list[str] = Field(default_factory=list, max_length=50)
    assessment: float = Field(ge=0, le=100, description="Score of the online assessment, 0-100.")
    cover_letter: str | None = None


class Screening(BaseModel):
    score: float
    advance: bool


def score(app: Application) -> float:
    """A transparent rule: experience (capped at 10 years), share of required skills, assessment."""
    skills = {s.strip().lower() for s in app.skills}
    exp = min(app.years_experience, 10.0) / 10.0
    cover = len(skills & REQUIRED_SKILLS) / len(REQUIRED_SKILLS)
    return round(0.3 * exp + 0.3 * cover + 0.4 * app.assessment / 100.0, 4)


model_app = FastAPI(title="Hiring screen example", version="1.0.0")


@model_app.post("/screen", response_model=Screening)
async def screen(application: Application) -> Screening:
    s = score(application)
    return Screening(score=s, advance=s >= ADVANCE_AT)


@model_app.get("/health")
async def health() -> dict[str, Any]:
    return {"status": "ok"}


@functools.cache
def _guarded_app() -> Any:
    from mlguard.middleware import GuardMiddleware

    return GuardMiddleware(model_app, config=CONFIG_PATH)


def __getattr__(name: str) -> Any:
    if name == "app":
        return _guarded_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
