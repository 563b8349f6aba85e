"""Apps the benchmarks serve: a minimal JSON endpoint, bare and wrapped by a fully configured guard.

The pass-through benchmark hits a route the guard does not guard, so the difference between the two is the cost
of the guard's first statement: route lookup and hand-over.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def score(request: Request) -> JSONResponse:
    doc = await request.json()
    return JSONResponse({"score": 0.42, "approved": False, "n": len(doc)})


bare_app = Starlette(routes=[Route("/health", health), Route("/score", score, methods=["POST"]),
                             Route("/predict", score, methods=["POST"])])


def guard_config() -> dict[str, Any]:
    work = Path(os.environ.get("MLGUARD_BENCH_DIR") or tempfile.mkdtemp(prefix="mlguard-bench-"))
    return {
        "policies": ["gdpr", "ecoa"],
        "retention": {"max": "P3Y"},
        "audit": {"store": f"sqlite:///{work / 'audit.db'}", "keyring": str(work / "bench.keyring")},
        "routes": [{
            "path": "/predict", "subject": "$.applicant.id",
            "protected": {"sex": "$.applicant.sex", "race": "$.applicant.race"},
            "pii": {"$.applicant.name": "PERSON", "$.applicant.email": "EMAIL_ADDRESS", "$.note": "scan"},
            "model": {"output": "$.score", "favorable": "$.approved"},
        }],
    }


def guarded_app() -> Any:
    """uvicorn factory: the same app behind the guard (all stages this build has)."""
    from mlguard.middleware import GuardMiddleware

    return GuardMiddleware(bare_app, config=guard_config())


def example_guarded() -> Any:
    """uvicorn factory: the example credit-scoring service (``model_app``) behind a guard built for one bench row.

    The configuration comes from the file named by ``MLGUARD_BENCH_CONFIG`` (bench/e2e.py writes one variant of
    examples/credit_scoring/mlguard.yaml per row), and ``MLGUARD_BENCH_STAGES`` picks the stages: a comma list,
    ``none`` for the guard's core alone (route match, body limits, protected attributes, record of the
    exchange, no stage), unset for every stage. Choosing stages through ``Guard(stages=...)`` rather than
    ``enabled: false`` keys means a row that does not use presidio or shap never imports them, so each row's
    memory and start-up time are those of what it runs.
    """
    from examples.credit_scoring.app import model_app
    from mlguard.middleware import GuardMiddleware
    from mlguard.runtime import Guard

    config = os.environ["MLGUARD_BENCH_CONFIG"]
    raw = os.environ.get("MLGUARD_BENCH_STAGES")
    stages = None if raw is None else [s for s in raw.split(",") if s and s != "none"]
    return GuardMiddleware(model_app, guard=Guard(config, stages=stages))
