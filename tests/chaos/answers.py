"""What the chaos suite's callers heard, classified: which answers are refusals.

A refusal is the server declining a payment before any work: nothing journalled, the
key not used, nothing acknowledged; the caller retries later with the same key
(docs/contract.md, "Status codes"). Two answers are refusals:

- RESOURCE_EXHAUSTED: admission's bound on the settlement queue, the ledger's bound, a
  full queue; a call's code, or a PayStream frame's FAILED reason;
- CANCELLED that the caller did not cause: grpc-core's bound on calls not yet taken by
  the server's event loop (`--pending-calls-max`, `--pending-call-wait-max-s`), which
  ends the call without a status of its own (details "CANCELLED").

A CANCELLED the client caused itself (it cancelled the call, closed its channel under
it, or dropped it) says nothing of the server: grpc.aio marks those with details of its
own, and they stay errors. Every other code is classified as it was: by the scenario.
"""

from __future__ import annotations

from collections.abc import Mapping

# The refusals a call's code or a PayStream frame's FAILED reason may carry.
SHED = frozenset({"RESOURCE_EXHAUSTED"})
# The details grpc.aio gives a call the client itself ended: `call.cancel()` (also what
# closing the channel does to each call in flight) and a call garbage collected
# unfinished (grpc/aio/_call.py, _LOCAL_CANCELLATION_DETAILS, _GC_CANCELLATION_DETAILS).
CLIENT_CANCELLED = frozenset({
    "Locally cancelled by application!",
    "Cancelled upon garbage collection!",
})  # fmt: skip


def is_refusal(code: str, detail: str = "") -> bool:
    """Whether a call that ended with gRPC ``code`` (its name) and ``detail`` (its
    status details) was refused by the server before any work."""
    if code in SHED:
        return True
    return code == "CANCELLED" and detail not in CLIENT_CANCELLED


def refused(answer: Mapping[str, str]) -> bool:
    """Whether one answer of the load (a row of `quickpay bench --answers`) is a
    refusal: a refused call's code, or a PayStream frame FAILED for a refusal."""
    if answer["error"]:
        return is_refusal(answer["error"], answer.get("detail", ""))
    return answer["status"] == "FAILED" and answer["reason"] in SHED
