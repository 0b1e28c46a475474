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
from collections.abc import Iterator
from pathlib import Path

from quickpay_engine._engine import SubscriberFile
from quickpay_engine.commands import WRITES, add_command, add_group
from quickpay_engine.config import check_host_port, settings_from
from quickpay_engine.domain import LineStatus, Plan, SubscriberRow
from quickpay_engine.errors import ImportRowError
from quickpay_engine.storage import claim_databases, open_store
from quickpay_engine.store.ownership import InUse
from quickpay_engine.subscriber_changes import VERSION_MAX
from quickpay_engine.subscribers import open_file, read_chunks

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
        return _failed(err)
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
        return _failed(err)
    except ImportRowError as err:
        return _failed(f"{args.file}: {err}; nothing was loaded")
    finally:
        if owner is not None:
            owner.close()
    done = f"imported {n} subscribers from {args.file} into {settings.database_url}"
    if args.replace:
        done += f"; {closed} lines missing from the file closed"
    print(done)
    return 0


def _failed(message: object, status: int = 1) -> int:
    """Says why the import failed, on stderr; returns the exit status."""
    print(f"quickpay subscribers import: {message}", file=sys.stderr)
    return status


def _run_remote(args: argparse.Namespace) -> int:
    """``--listen``: the file's lines go to the running server as changes of one version,
    read and sent a chunk at a time (memory for a chunk, whatever the file's size)."""
    check_host_port("--listen", args.listen)
    if args.replace:
        return _failed(
            "--replace takes a data dir's whole base and cannot go to a running server, which"
            " takes changes: send the file without it (lines to close as status CLOSED), or"
            " stop the server",
            2,
        )
    try:
        source = open_file(args.file)
        version = args.change_version
        if version is None:
            version = args.file.stat().st_mtime_ns // 1_000
    except OSError as err:
        return _failed(err)
    except ImportRowError as err:
        return _failed(f"{args.file}: {err}; nothing was sent")
    if not 1 <= version <= VERSION_MAX:
        return _failed(f"--change-version {version}: expected 1 to 2^63-1", 2)
    return _send(args, source, version)


def _send(args: argparse.Namespace, source: SubscriberFile, version: int) -> int:
    """Streams the file's rows to the server as changes of ``version``, reading the
    next chunk as gRPC takes the changes; prints its summary. A bad line ends the stream
    there: the server applies the lines before it (each of its batches all or nothing)
    and none from it on. The blocking client: gRPC's core reads the changes from the
    iterator on its own thread, several times faster than an asyncio stream sends them."""
    import grpc

    from quickpay_engine.api.convert import change_message
    from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2_grpc as pb_grpc

    stopped: list[ImportRowError | OSError] = []

    def changes() -> Iterator[object]:
        try:
            for chunk in read_chunks(source):
                for _, a, m, p, s, c, b, co, sw, cr in chunk:
                    row = SubscriberRow(a, m, Plan(p), LineStatus(s), c, b, co, sw, cr)
                    yield change_message(row, version)
        except (ImportRowError, OSError) as err:
            stopped.append(err)  # the stream ends cleanly before the bad line

    token = os.environ.get(TOKEN_VARIABLE)
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    with _channel(args) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT_S)
        except grpc.FutureTimeoutError:
            return _failed(
                f"no server answers at {args.listen} within {CONNECT_TIMEOUT_S:g} s;"
                " nothing was sent"
            )
        stub = pb_grpc.SettlementStub(channel)
        try:
            summary = stub.UpsertSubscribers(changes(), metadata=metadata)
        except grpc.RpcError as err:
            return _failed(
                f"{args.listen} answered {err.code().name}:"
                f" {_with_row(err.details() or '', args.file)}"
            )
    did = (
        f"{summary.applied} applied ({summary.created} new lines), {summary.stale} already at"
        f" this version or newer, in {summary.batches} batches"
    )
    if stopped:
        err = stopped[0]
        where = f"{args.file}: " if isinstance(err, ImportRowError) else ""
        return _failed(
            f"{where}{err}; sending stopped there, none from it on was sent; the"
            f" {summary.received} subscribers before it went at version {version}: {did}"
        )
    print(
        f"sent {summary.received} subscribers from {args.file} to {args.listen} at version"
        f" {version}: {did}"
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
