"""`quickpay adjust`: one AdjustBalance call to a running server, for an operator or a
script (the carrier's systems call the RPC themselves; docs/contract.md)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import grpc

from quickpay_engine.commands import add_command
from quickpay_engine.commands.bench import TOKEN_VARIABLE
from quickpay_engine.config import settings_from

CALL_TIMEOUT_S = 30.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers,
        "adjust",
        "move a subscriber's balance by an amount another system decided (AdjustBalance)",
    )
    parser.add_argument("account_id", help="the subscriber's account")
    parser.add_argument(
        "amount_minor",
        type=int,
        help="signed minor units in the subscriber's favour: positive credits, negative debits",
    )
    parser.add_argument("currency", help="ISO 4217 code, the account's")
    parser.add_argument("--key", required=True, help="idempotency key: a retry sends the same")
    parser.add_argument("--reason", required=True, help="why, for people")
    parser.add_argument("--source", required=True, help="the system that decided it (ocs, crm)")
    parser.add_argument(
        "--allow-negative",
        action="store_true",
        help="let a debit take a prepaid balance below zero (else it is declined)",
    )
    target = parser.add_argument_group("target")
    target.add_argument("--target", help="HOST:PORT of the engine (default: --listen)")
    target.add_argument("--tls-ca", type=Path, help="PEM roots: connect with TLS")
    target.add_argument("--tls-server-name", help="name to check in the server certificate")
    target.add_argument("--tls-cert", type=Path, help="PEM client certificate, for mTLS")
    target.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    # A bearer token is read from QUICKPAY_TOKEN only: a flag's value shows in `ps`.
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Exit 0 when applied, 1 when declined, 2 when the call failed (its gRPC code
    named: UNAVAILABLE means retry with the same --key)."""
    from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
    from quickpay_engine.bench.load import LoadPlan, open_channels

    settings = settings_from(args)
    tls = args.tls_ca is not None or args.tls_cert is not None
    plan = LoadPlan(
        target=args.target or settings.listen,
        channels=1,
        tls=tls,
        tls_ca=args.tls_ca,
        tls_server_name=args.tls_server_name,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        token=os.environ.get(TOKEN_VARIABLE) or None,
        count=1,
    )
    request = pb.AdjustBalanceRequest(
        idempotency_key=args.key,
        account_id=args.account_id,
        amount=pb.Money(amount_minor=args.amount_minor, currency=args.currency),
        reason=args.reason,
        source_system=args.source,
        allow_negative_balance=args.allow_negative,
    )

    async def call() -> pb.AdjustBalanceResponse:
        (channel,) = open_channels(plan)
        async with channel:
            method = channel.unary_unary(
                "/quickpay.v1.Settlement/AdjustBalance",
                request_serializer=pb.AdjustBalanceRequest.SerializeToString,
                response_deserializer=pb.AdjustBalanceResponse.FromString,
            )
            return await method(request, timeout=CALL_TIMEOUT_S)

    try:
        reply = asyncio.run(call())
    except grpc.aio.AioRpcError as err:
        print(f"quickpay adjust: {err.code().name}: {err.details()}", file=sys.stderr)
        return 2
    after = f"{reply.balance_after.amount_minor} {reply.balance_after.currency}"
    replayed = " (replayed)" if reply.replayed else ""
    if reply.status == pb.APPLIED:
        print(f"APPLIED {reply.adjustment_id}{replayed}: balance after {after}")
        return 0
    print(
        f"DECLINED {reply.adjustment_id}{replayed}: {reply.decline_reason}: {reply.decline_detail}"
    )
    return 1
