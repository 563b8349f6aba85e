"""``mlguard demo`` runs the guarded example end to end and says what each stage did."""

from __future__ import annotations

from mlguard.demo import run_demo


def test_demo_runs_every_section() -> None:
    lines: list[str] = []
    code = run_demo(lines.append, limit=25, hiring=False)
    text = "\n".join(lines)
    assert code == 0, text
    assert "statuses {200: 25}" in text
    assert "values redacted across 25 requests" in text
    assert "model saw:" in text
    assert "adverse-action reasons:" in text
    assert "route /predict:" in text
    assert "verified without any decryption key: intact; 25 records" in text
    assert ": 0 found in clear" in text
    assert "not available" not in text
