"""``decide(evidence, rules) -> Decision``: the pure heart of enforcement.

Why pure: what the guard does with a failed stage, a stopped system, a fairness violation or an adverse
decision without its lawful reasons is the part a compliance reviewer must be able to read and test as a
table. The stages gather evidence, the Exchange enforces the Decision; this module imports none of them and
does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Phase = Literal["request", "response", "finish"]
FailureMode = Literal["fail_open", "fail_closed"]
FairnessStatus = Literal["ok", "warn", "violation", "insufficient", "off"]
FairnessAction = Literal["annotate", "alert", "block"]


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the stages found, as plain values."""

    phase: Phase
    failed_stages: tuple[str, ...] = ()
    halted: bool = False  # a stop holds on the route (a person's, the fairness monitor's, or both)
    # At the request phase the fairness stage reports "violation" only while the monitor's own stop holds (a
    # block in force); after the app, the status of the window the decision was counted in.
    fairness_status: FairnessStatus = "off"
    unredacted: bool = False  # the PII stage failed before it had a redacted document to pass on
    # The explain stage found that an unfavourable decision has no complete lawful principal reasons (its record
    # section says ``reasons_incomplete: true``); ``reasons_finding`` is the finding's code (no input value).
    reasons_incomplete: bool = False
    reasons_finding: str = ""


@dataclass(frozen=True, slots=True)
class Rules:
    """The parts of the effective policy that decide."""

    failure_mode: FailureMode = "fail_closed"
    fairness_action: FairnessAction = "annotate"
    reasons_required: bool = False  # explanations.reasons_on_adverse: principal reasons on an adverse decision
    reasons_policy: str = ""  # the policy ids that require them, named in the refusal's detail


@dataclass(frozen=True, slots=True)
class Decision:
    """``proceed`` or ``refuse`` (with the status and a reason a client may read: no input values)."""

    action: Literal["proceed", "refuse"]
    status: int | None = None
    reason: str = ""
    detail: str = ""
    gap: bool = False  # served although a stage failed (fail_open): the audit record says so
    title: str = "Service unavailable"  # the problem+json title of a refusal

    @property
    def refused(self) -> bool:
        return self.action == "refuse"


PROCEED = Decision("proceed")


def decide(evidence: Evidence, rules: Rules) -> Decision:
    """Decide whether the exchange goes on.

    >>> decide(Evidence("request", failed_stages=("pii",)), Rules("fail_closed")).status
    503
    >>> decide(Evidence("request", failed_stages=("pii",)), Rules("fail_open")).gap
    True
    >>> decide(Evidence("request", failed_stages=("pii",), unredacted=True), Rules("fail_open")).status
    503
    >>> decide(Evidence("request", halted=True), Rules()).reason
    'halted'
    >>> decide(Evidence("request", halted=True, fairness_status="violation"), Rules(fairness_action="block")).reason
    'fairness_block'
    >>> decide(Evidence("response", reasons_incomplete=True), Rules("fail_closed", reasons_required=True)).reason
    'reasons_incomplete'
    >>> decide(Evidence("response", reasons_incomplete=True), Rules("fail_open", reasons_required=True)).action
    'proceed'
    """
    if evidence.phase == "request":
        # A stop in force is answered before anything else: the model is not called in any case. The fairness
        # monitor's stop is named as such (problem type and metric reason ``fairness-block``), so a client and
        # an operator are never told a person stopped the route when the monitor did. When a person stopped it
        # as well, the monitor's reason is the one given: it is the one with a cause a client may be told (a
        # person's reason is operator text for the audit trail), and once the monitor's stop is lifted the
        # person's stop answers as ``halted``. The audit record's fairness section lists both.
        if rules.fairness_action == "block" and evidence.fairness_status == "violation":
            return Decision("refuse", 503, "fairness_block",
                            "decisions on this route are stopped by the fairness monitor: the fairness policy is "
                            "violated; they resume when an operator resumes the route")
        if evidence.halted:
            return Decision("refuse", 503, "halted",
                            "decisions on this route are stopped by human oversight until resumed")
    if evidence.unredacted and evidence.phase in ("request", "response"):
        # fail_open keeps the service up, never at the price of personal data in clear: a document the guard
        # could not redact is not passed on, whatever the failure mode.
        return Decision("refuse", 503, "unredacted",
                        "personal data in this exchange could not be redacted, so it is not passed on")
    if evidence.failed_stages:
        names = ", ".join(evidence.failed_stages)
        if rules.failure_mode == "fail_closed":
            return Decision("refuse", 503, "stage_failed",
                            f"the {names} stage failed and the policy's failure_mode is fail_closed")
        return Decision("proceed", None, "stage_failed_open",
                        f"the {names} stage failed; served under failure_mode fail_open", gap=True)
    if (evidence.phase == "response" and evidence.reasons_incomplete and rules.reasons_required
            and rules.failure_mode == "fail_closed"):
        # Reg B 1002.9(b)(2): an adverse action states its specific principal reasons. An unfavourable decision
        # whose reasons cannot stand as those (none at all, or prohibited bases withheld that carried it) is a
        # notice the lender may not send as is; under fail_closed the guard does not hand it on, exactly as it
        # does not hand on a decision whose safeguard failed. The decision is sealed in the audit record (with
        # the explanation's finding) for the lender's review, never released to the client. Under fail_open it is
        # served flagged (``reasons_incomplete`` in the explanation, ``MLGuard-Reasons: incomplete``), as before.
        # Only at the response phase: a deferred explanation is computed after the answer has left, so it never
        # reaches this evidence (start-up warns about that combination: mlguard/explain/route.py).
        finding = f" ({evidence.reasons_finding})" if evidence.reasons_finding else ""
        policy = f" ({rules.reasons_policy})" if rules.reasons_policy else ""
        return Decision("refuse", 503, "reasons_incomplete",
                        f"this unfavourable decision has no complete lawful principal reasons{finding}; the "
                        f"route's policy{policy} requires principal reasons on an adverse decision "
                        "(explanations.reasons_on_adverse) and its failure_mode is fail_closed, so the decision "
                        "is withheld: it is kept, with its explanation, in the audit record of this exchange",
                        title="Adverse action reasons incomplete")
    return PROCEED
