"""Send synthetic candidates through the guarded hiring screen, add ground truth, print the fairness status.

The synthetic population has a built-in disparity (one group's assessment scores are shifted down), so the
window reaches "warn" or "violation" after a few hundred decisions: the point of the example is to watch the
guard notice. In-process by default (httpx ASGITransport, audit to a temporary directory); ``--url`` targets a
running server instead (then set MLGUARD_ADMIN_TOKEN to the server's token).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import tempfile
from pathlib import Path
from typing import Any

import httpx

SEXES = ["Female", "Male"]
RACES = ["Hispanic or Latino", "White", "Black or African American", "Asian", "Two or More Races"]


def candidate(i: int, rng: random.Random) -> tuple[dict[str, Any], bool]:
    sex, race = rng.choice(SEXES), rng.choice(RACES)
    shift = -30.0 if race == "Black or African American" else 0.0
    assessment = max(0.0, min(100.0, rng.gauss(60 + shift, 15)))
    body = {"candidate": {"id": f"cand-{i}", "name": f"Candidate {i}", "email": f"cand{i}@mail.example.com",
                          "sex": sex if rng.random() > 0.03 else None, "race": race},
            "years_experience": round(rng.uniform(0, 15), 1),
            "skills": rng.sample(["python", "sql", "statistics", "excel", "java"], k=rng.randint(1, 4)),
            "assessment": round(assessment, 1)}
    performed_well = rng.random() < (0.3 + 0.5 * assessment / 100)  # ground truth, known months later
    return body, performed_well


async def run(n: int, url: str | None, seed: int) -> None:
    rng = random.Random(seed)
    token = os.environ.setdefault("MLGUARD_ADMIN_TOKEN", secrets.token_urlsafe(16))
    headers = {"authorization": f"Bearer {token}"}
    if url is None:
        from examples.hiring_screen.app import CONFIG_PATH, model_app
        from mlguard.config import load_config
        from mlguard.keys import Keyring
        from mlguard.middleware import GuardMiddleware
        from mlguard.runtime import Guard

        tmp = Path(tempfile.mkdtemp(prefix="mlguard-hiring-"))
        cfg = load_config(CONFIG_PATH).model_copy(deep=True)
        cfg.audit.store = f"sqlite:///{tmp}/audit.db"
        cfg.audit.keyring = tmp / "mlguard.keyring"
        Keyring.create(cfg.audit.keyring)  # a throw-away keyring, made on purpose (one the guard makes is warned of)
        guard = Guard(cfg)  # closed below: ASGITransport sends no lifespan, so nobody else would close it
        transport: httpx.AsyncBaseTransport = httpx.ASGITransport(app=GuardMiddleware(model_app, guard=guard))
        base = "http://hiring.local"
        print(f"audit trail: {tmp}/audit.db (keyring {tmp}/mlguard.keyring)")
    else:
        transport, base = httpx.AsyncHTTPTransport(), url
    async with httpx.AsyncClient(transport=transport, base_url=base, timeout=30) as client:
        last = None
        for i in range(n):
            body, truth = candidate(i, rng)
            r = await client.post("/screen", json=body)
            last = r.headers.get("mlguard-fairness")
            if r.status_code == 200 and i % 2 == 0:
                await client.post("/mlguard/feedback", headers=headers,
                                  json={"audit_id": r.headers["mlguard-audit-id"], "label": truth})
        status = (await client.get("/mlguard/fairness", headers=headers)).json()
    if url is None:
        await guard.aclose()  # the queue drained, a last checkpoint signed, the WAL folded into the database
    print(f"{n} candidates screened; MLGuard-Fairness of the last: {last}")
    for route in status["routes"].values():
        rep = route["report"]
        print(f"route {route['path']}: {rep['status']} over {rep['decisions']} decisions "
              f"({rep['labelled']} labelled)")
        for dim, d in rep["dimensions"].items():
            for row in d["impact"]:
                ir = row["selection_impact_ratio"]
                print(f"  {row['group']:<55} n={row['n']:<5} rate={row['selection_rate']:.3f} "
                      f"IR={'n/a' if ir is None else f'{ir:.3f}'}{'  < 4/5' if row['below_four_fifths'] else ''}")
            if d["unknown"]:
                print(f"  {dim}: {d['unknown']} of unknown category")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=600)
    ap.add_argument("--url", default=None, help="a running guarded server (default: in-process)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    import logging

    # the guard's alerts (status changes) as readable lines; their payloads hold no candidate data
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger("mlguard").addHandler(handler)
    asyncio.run(run(args.n, args.url, args.seed))


if __name__ == "__main__":
    main()
