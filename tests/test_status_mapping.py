"""The one exception -> gRPC status mapping, for the errors a failing disk raises: the
chaos suite's full disk found a log that could not write answering INTERNAL."""

from __future__ import annotations

import grpc

from quickpay_engine.api.servicer import status_of
from quickpay_engine.errors import WalCorruption, WalFailure


def test_a_log_that_cannot_write_answers_unavailable_and_a_corrupt_one_internal() -> None:
    failed = WalFailure("write segment: No space left on device (os error 28)")
    assert status_of(failed) == (grpc.StatusCode.UNAVAILABLE, str(failed))
    # The near miss: corruption is a bug, never "try again".
    assert status_of(WalCorruption("bad checksum"))[0] is grpc.StatusCode.INTERNAL
