"""A closed-loop load: N concurrent callers send Pay over gRPC until the requests run out.

Reports settled / declined / errors by code, payments per second and latency
percentiles, with a live progress bar.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np
from tqdm import tqdm

from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc

# Each call gets this long before the client gives up on it.
CALL_TIMEOUT_S = 30.0


@dataclass
class Summary:
    """What a load run measured."""

    sent: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    declines: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def rate_per_s(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_s:
            return 0.0
        return float(np.percentile(np.asarray(self.latencies_s), q) * 1_000)

    def table(self) -> str:
        """The human summary printed at the end of a run."""
        lines = [
            f"payments sent   {self.sent}",
            f"settled         {self.statuses.get('SETTLED', 0)}",
            f"declined        {self.statuses.get('DECLINED', 0)}"
            + (
                f"  ({', '.join(f'{k} {v}' for k, v in self.declines.most_common())})"
                if self.declines
                else ""
            ),
            f"errors          {sum(self.errors.values())}"
            + (
                f"  ({', '.join(f'{k} {v}' for k, v in self.errors.most_common())})"
                if self.errors
                else ""
            ),
            f"payments/s      {self.rate_per_s:,.0f}",
            f"latency p50     {self.percentile_ms(50):.2f} ms",
            f"latency p99     {self.percentile_ms(99):.2f} ms",
        ]
        return "\n".join(lines)


async def run_closed_loop(
    target: str,
    requests: Sequence[pb.PayRequest],
    concurrency: int,
    channels: int = 4,
    progress: bool = True,
) -> Summary:
    """Sends every request with ``concurrency`` callers over ``channels`` connections."""
    summary = Summary()
    # Separate connections, so one HTTP/2 connection's ordering is not the bottleneck.
    opened = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(channels)
    ]
    stubs = [pb_grpc.SettlementStub(c) for c in opened]
    queue: asyncio.Queue[pb.PayRequest] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    bar = tqdm(total=len(requests), unit="pay", disable=not progress, smoothing=0.1)

    async def caller(stub: pb_grpc.SettlementStub) -> None:
        while True:
            try:
                request = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            started = time.perf_counter()
            try:
                response = await stub.Pay(request, timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as err:
                summary.errors[err.code().name] += 1
            else:
                status = pb.PaymentStatus.Name(response.status)
                summary.statuses[status] += 1
                if response.decline_reason:
                    summary.declines[response.decline_reason] += 1
            summary.latencies_s.append(time.perf_counter() - started)
            summary.sent += 1
            bar.update(1)

    try:
        for channel in opened:
            await asyncio.wait_for(channel.channel_ready(), timeout=10)
        started = time.perf_counter()
        await asyncio.gather(*(caller(stubs[i % channels]) for i in range(concurrency)))
        summary.elapsed_s = time.perf_counter() - started
    finally:
        bar.close()
        for channel in opened:
            await channel.close()
    return summary
