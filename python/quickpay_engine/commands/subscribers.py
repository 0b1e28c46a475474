"""`quickpay subscribers import FILE.csv`: loads the billing system's export, all or nothing.

Offline, into the data dir's store (refused while a server holds it); or, with
``--listen HOST:PORT``, through a running server's UpsertSubscribers RPC, which applies
the lines without a restart.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from quickpay_engine.commands import WRITES, add_command, add_group
from quickpay_engine.config import check_host_port, settings_from
from quickpay_engine.domain import SubscriberRow
from quickpay_engine.errors import ImportRowError
from quickpay_engine.storage import claim_databases, open_store
from quickpay_engine.store.ownership import InUse
from quickpay_engine.subscriber_changes import VERSION_MAX
from quickpay_engine.subscribers import parse_csv

# A bearer token for a server with an access file, as `quickpay bench` reads it.
TOKEN_VARIABLE = "QUICKPAY_TOKEN"  # noqa: S105 (the variable's name, not a token)
# How long the import waits to connect to the server before giving up.
CONNECT_TIMEOUT_S = 10.0
# What a refusal beside a running server adds: the way that works.
IN_USE_HINT = "or send the file to it: quickpay subscribers import FILE --listen HOST:PORT"


class _Remote(argparse.Action):
    """--listen: the file goes to a running server, so the data dir is not touched and
    its lock not taken (cli.owning)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        value: object,
        *_: object,
    ) -> None:
        setattr(namespace, self.dest, value)
        namespace.data_dir_access = None


def register(subparsers: argparse._SubParsersAction) -> None:
    actions = add_group(subparsers, "subscribers", "manage the subscriber table")
    load = add_command(actions, "import", "load a subscriber CSV (all rows or none)")
    load.add_argument("file", type=Path, help="CSV with the columns DESIGN.md fixes")
    load.add_argument(
        "--replace",
        action="store_true",
        help="the file is the whole base: lines missing from it are CLOSED (never deleted);"
        " without it, the file's rows are inserted or updated and the others left as they are"
        " (not with --listen)",
    )
    remote = load.add_argument_group("a running server (--listen)")
    remote.add_argument(
        "--listen",
        action=_Remote,
        metavar="HOST:PORT",
        help="send the file to the server listening there (UpsertSubscribers), which applies"
        " it without a restart; the data dir is not touched",
    )
    remote.add_argument(
        "--change-version",
        type=int,
        help="the carrier's version the file's lines carry: a line the server holds at this"
        " version or a newer one is left as it is (default: the file's modification time in"
        " microseconds since 1970)",
    )
    remote.add_argument("--tls", action="store_true", help="connect with TLS")
    remote.add_argument("--tls-ca", type=Path, help="PEM roots for TLS (default: system roots)")
    remote.add_argument("--tls-server-name", help="name to check in the server certificate")
    remote.add_argument("--tls-cert", type=Path, help="PEM client certificate, for mTLS")
    remote.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    # The token is read from QUICKPAY_TOKEN only: a flag's value shows in `ps`.
    load.set_defaults(run=run_import, data_dir_access=WRITES, in_use_hint=IN_USE_HINT)


def run_import(args: argparse.Namespace) -> int:
    if args.listen is not None:
        return _run_remote(args)
    settings = settings_from(args)
    # The file is read as a stream inside the import's one transaction: a bad line
    # rolls it back, so nothing of the file is loaded.
    try:
        args.file.stat()
    except OSError as err:
        print(f"quickpay subscribers import: {err}", file=sys.stderr)
        return 1
    # On PostgreSQL, refused while an engine owns the database: it keeps the subscribers'
    # balances in memory, and would go on from the ones this import replaces.
    try:
        owner = claim_databases(settings, "quickpay subscribers import")
    except InUse as err:
        raise InUse(f"{err}, {IN_USE_HINT}") from None
    try:
        store = open_store(settings)
        try:
            n, closed = store.import_subscriber_file(args.file, replace=args.replace)
        finally:
            store.close()
    except OSError as err:
        print(f"quickpay subscribers import: {err}", file=sys.stderr)
        return 1
    except ImportRowError as err:
        print(
            f"quickpay subscribers import: {args.file}: {err}; nothing was loaded", file=sys.stderr
        )
        return 1
    finally:
        if owner is not None:
            owner.close()
    done = f"imported {n} subscribers from {args.file} into {settings.database_url}"
    if args.replace:
        done += f"; {closed} lines missing from the file closed"
    print(done)
    return 0


def _run_remote(args: argparse.Namespace) -> int:
    """``--listen``: the file's lines go to the running server as changes of one version."""
    check_host_port("--listen", args.listen)
    if args.replace:
        print(
            "quickpay subscribers import: --replace takes a data dir's whole base and cannot go"
            " to a running server, which takes changes: send the file without it (lines to"
            " close as status CLOSED), or stop the server",
            file=sys.stderr,
        )
        return 2
    try:
        with args.file.open(newline="") as text:
            rows = parse_csv(text)
        version = args.change_version
        if version is None:
            version = args.file.stat().st_mtime_ns // 1_000
    except OSError as err:
        print(f"quickpay subscribers import: {err}", file=sys.stderr)
        return 1
    except ImportRowError as err:
        print(
            f"quickpay subscribers import: {args.file}: {err}; nothing was loaded", file=sys.stderr
        )
        return 1
    if not 1 <= version <= VERSION_MAX:
        print(
            f"quickpay subscribers import: --change-version {version}: expected 1 to 2^63-1",
            file=sys.stderr,
        )
        return 2
    return _send(args, rows, version)


def _send(args: argparse.Namespace, rows: Sequence[SubscriberRow], version: int) -> int:
    """Streams the rows to the server as changes of ``version``; prints its summary.
    The blocking client: gRPC's core reads the changes from the iterator on its own
    thread, several times faster than an asyncio stream sends them."""
    import grpc

    from quickpay_engine.api.convert import change_message
    from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc

    def changes() -> Iterator[object]:
        for row in rows:
            yield change_message(row, version)

    token = os.environ.get(TOKEN_VARIABLE)
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    with _channel(args) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT_S)
        except grpc.FutureTimeoutError:
            print(
                f"quickpay subscribers import: no server answers at {args.listen}"
                f" within {CONNECT_TIMEOUT_S:g} s; nothing was sent",
                file=sys.stderr,
            )
            return 1
        stub = pb_grpc.SettlementStub(channel)
        try:
            summary = stub.UpsertSubscribers(changes(), metadata=metadata)
        except grpc.RpcError as err:
            print(
                f"quickpay subscribers import: {args.listen} answered {err.code().name}:"
                f" {_with_row(err.details() or '', args.file)}",
                file=sys.stderr,
            )
            return 1
    print(
        f"sent {summary.received} subscribers from {args.file} to {args.listen} at version"
        f" {version}: {summary.applied} applied ({summary.created} new lines), {summary.stale}"
        f" already at this version or newer, in {summary.batches} batches"
    )
    return 0


def _with_row(details: str, path: Path) -> str:
    """The server's refusal, saying which row of the file ``changes[N]`` is."""
    match = re.match(r"changes\[(\d+)\]", details)
    if match is None:
        return details
    n = int(match[1])
    return f"{details} (the file's subscriber {n + 1}, {path}); the ones before it were applied"


def _channel(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    import grpc

    options: list[tuple[str, object]] = []
    if args.tls_server_name:
        options.append(("grpc.ssl_target_name_override", args.tls_server_name))
    if not (args.tls or args.tls_ca or args.tls_cert):
        return grpc.insecure_channel(args.listen, options=options)
    credentials = grpc.ssl_channel_credentials(
        args.tls_ca.read_bytes() if args.tls_ca else None,
        args.tls_key.read_bytes() if args.tls_key else None,
        args.tls_cert.read_bytes() if args.tls_cert else None,
    )
    return grpc.secure_channel(args.listen, credentials, options=options)
