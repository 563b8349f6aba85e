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
