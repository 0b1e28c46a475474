"""The baseline server: a bare grpc.aio Settlement that settles nothing.

It answers Pay, PayStream and PayBatch at once with a canned PayResponse of about the size of a
real settled reply, so the same ``quickpay bench`` client driving it measures what gRPC,
protobuf and asyncio cost on this machine, and the engine's figures can be read as a
ratio to that floor. It is a measuring instrument, not a product path: it validates
nothing and stores nothing.

Run it as ``python -m quickpay_engine.bench.echo --listen 127.0.0.1:0``; it prints
``listening on HOST:PORT`` (as ``quickpay serve`` does) and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import uvloop

from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc


def canned_reply(request: pb.PayRequest) -> pb.PayResponse:
    """A settled-looking reply, with every field a real settled reply fills."""
    return pb.PayResponse(
        payment_id="pay_" + "0" * 32,
        idempotency_key=request.idempotency_key,
        status=pb.SETTLED,
        confirmation=pb.SettlementConfirmation(
            confirmation_id="cnf_" + "0" * 32,
            ledger_sequence=1,
            gateway="echo",
            gateway_reference="echo-0000000000",
            balance_after=pb.Money(amount_minor=0, currency=request.amount.currency),
            service_state_after="ACTIVE",
        ),
    )


class EchoSettlement(pb_grpc.SettlementServicer):
    """Pay, PayStream and PayBatch answered with ``canned_reply``; the other RPCs
    unimplemented."""

    async def Pay(
        self, request: pb.PayRequest, context: grpc.aio.ServicerContext
    ) -> pb.PayResponse:
        return canned_reply(request)

    async def PayStream(
        self, request_iterator: AsyncIterator[pb.PayRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.PayResponse]:
        async for request in request_iterator:
            yield canned_reply(request)

    async def PayBatch(
        self, request: pb.PayBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.PayBatchResponse:
        return pb.PayBatchResponse(results=[canned_reply(p) for p in request.payments])


async def create_echo_server(
    listen: str, tls: tuple[bytes, bytes] | None = None
) -> tuple[grpc.aio.Server, int]:
    """Starts the baseline server on ``listen`` (port 0 picks one); returns it and the port.

    ``tls`` is (PEM private key, PEM certificate chain): serve TLS only, as a TLS target
    for `quickpay bench --tls` when the engine itself is not serving TLS.
    """
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_SettlementServicer_to_server(EchoSettlement(), server)
    if tls is None:
        port = server.add_insecure_port(listen)
    else:
        port = server.add_secure_port(listen, grpc.ssl_server_credentials([tls]))
    if port == 0:
        raise OSError(f"could not listen on {listen}")
    await server.start()
    return server, port


async def _serve(listen: str, tls: tuple[bytes, bytes] | None) -> None:
    server, port = await create_echo_server(listen, tls)
    print(f"listening on {listen.rpartition(':')[0]}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    """Serves the baseline until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (127.0.0.1:0)")
    parser.add_argument("--tls-key", type=Path, help="PEM private key: serve TLS")
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate chain for --tls-key")
    args = parser.parse_args()
    if (args.tls_key is None) != (args.tls_cert is None):
        parser.error("--tls-key and --tls-cert go together")
    tls = (args.tls_key.read_bytes(), args.tls_cert.read_bytes()) if args.tls_key else None
    uvloop.run(_serve(args.listen, tls))


if __name__ == "__main__":
    main()
