"""PII redaction: the JSON-aware Redactor, its operators and the offline Presidio engine.

Public API (light to import; presidio/spaCy load only when an engine is built)::

    from mlguard.pii import Redactor
    red = Redactor.from_policy(resolve_policies(["gdpr"]).pii, keyring=ring)
    new_doc, findings = red.redact(doc, rules=[(compile_path("$.note"), "scan")])
"""

from __future__ import annotations

from mlguard.pii.redactor import REDACTED, UNSCANNED, Redactor, SpanCache

__all__ = ["REDACTED", "UNSCANNED", "Redactor", "SpanCache"]
