"""Wiring of the gRPC server: build the parts, start, drain on SIGTERM, stop.

``create_server`` is separate from ``serve`` so that tests bind port 0 and drive the
real server in process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import gc
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from quickpay_engine import ledger_limits
from quickpay_engine._engine import (
    WAL_FLUSH_BUCKETS_NS,
    ConfigInvalid,
    Engine,
    FraudScorer,
    Ledger,
)
from quickpay_engine.api.convert import add_subscriber_message, event_msg
from quickpay_engine.api.gen.quickpay.v1 import settlement_pb2 as pb
from quickpay_engine.api.servicer import SettlementServicer, add_to_server
from quickpay_engine.config import Settings
from quickpay_engine.errors import ConfigError
from quickpay_engine.events.jetstream import JetStreamPublisher
from quickpay_engine.events.relay import OutboxRelay
from quickpay_engine.events.subscriber_feed import SubscriberFeed, SubscriberFeedTask
from quickpay_engine.gateways.router import GatewayRouter
from quickpay_engine.gateways.supervisor import open_gateways
from quickpay_engine.keyfile import secret_key
from quickpay_engine.metrics import Metrics
from quickpay_engine.probes import ProbeServer, Readiness, refresh, start_probes
from quickpay_engine.security.guard import Guard
from quickpay_engine.security.settings import SecuritySettings, check_exposure
from quickpay_engine.security.tls import CertificateReloader
from quickpay_engine.settlement.ledger_book import LedgerBook
from quickpay_engine.settlement.pipeline import load_engine
from quickpay_engine.settlement.service import BatchSettings, SettlementService
from quickpay_engine.settlement.twophase import SWEEP_INTERVAL_S, TwoPhaseStore
from quickpay_engine.storage import Store, claim_databases, open_store
from quickpay_engine.store.pg_owner import PgOwner
from quickpay_engine.store.sqlite import SqliteStore

log = logging.getLogger(__name__)

SETTLEMENT_SERVICE = pb.DESCRIPTOR.services_by_name["Settlement"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# The health service's name for liveness: SERVING as long as the event loop answers,
# through recovery and drains, where "" (readiness) says NOT_SERVING.
LIVENESS_SERVICE = "quickpay.liveness"

# In-flight calls get this long to finish after SIGTERM before they are cancelled.
DRAIN_GRACE_S = 10.0
# At shutdown the relay gets this long to publish what the last batches wrote.
RELAY_FLUSH_S = 2.0
# gRPC messages above this size are refused by the transport (a PayRequest is < 1 KiB).
MESSAGE_BYTES_MAX = 4 * 1024 * 1024


def transport_options(settings: Settings) -> list[tuple[str, int]]:
    """The gRPC server's channel arguments. Besides the message bound, grpc-core's
    bounds on the calls that have arrived but that the event loop has not taken yet.
    grpc.aio takes calls one at a time per RPC method, as its loop gets to it; with
    the loop saturated they wait in grpc-core, unseen by admission (which starts in
    the handler), for as long as grpc's own bounds allow: 1,000 to 3,000 calls, 30 s.
    Past ``pending_calls_max`` grpc-core refuses the call in C++, with no Python run
    for it (its soft limit is set one below: below it no call is refused, so
    a burst of a few hundred calls or stream opens, a fleet of watchers reconnecting,
    is taken whole); a call still untaken
    after ``pending_call_wait_max_s`` is cancelled when the loop next takes a call of
    its method. grpc 1.85 answers both CANCELLED (the call is dropped, not answered
    with a status: docs/contract.md). The counts are per method, of untaken calls only:
    an open PayStream or WatchSettlements stream has been taken and never counts,
    unlike grpcio's ``maximum_concurrent_rpcs``."""
    return [
        ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
        ("grpc.so_reuseport", 0),
        # grpc-core refuses nothing when its soft limit is not below its hard one.
        ("grpc.server.max_pending_requests", max(0, settings.pending_calls_max - 1)),
        ("grpc.server.max_pending_requests_hard_limit", settings.pending_calls_max),
        ("grpc.server_max_unrequested_time_in_server", settings.pending_call_wait_max_s),
    ]


def fingerprint_key(data_dir: Path) -> bytes:
    """The installation's secret for request fingerprints, created on first use (0600)."""
    return secret_key(data_dir / "fingerprint.key")


def listen_on(
    server: grpc.aio.Server, listen: str, credentials: grpc.ServerCredentials | None = None
) -> int:
    """Binds ``listen`` (HOST:PORT; port 0 picks a free one), with TLS when
    ``credentials`` are given, and returns the port. A refusal is one line that names
    the address and why: grpc says only "Failed to bind", so the reason is asked of the
    OS with a plain bind of the same address."""
    try:
        if credentials is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, credentials)
    except RuntimeError:
        port = 0
    if port == 0:
        why = _bind_refusal(listen) or "grpc could not bind it"
        raise ConfigError(f"cannot listen on {listen}: {why}")
    return port


def check_listen(listen: str) -> None:
    """Refuses, before anything is opened or started, an address another process already
    listens on (the bind itself, later, is the check that counts)."""
    if listen.rpartition(":")[2] != "0" and (why := _bind_refusal(listen)):
        raise ConfigError(f"cannot listen on {listen}: {why}")


def _bind_refusal(listen: str) -> str:
    """Why the OS refuses to bind ``listen``, or "" when it does not."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError) as err:
        return f"the address does not resolve ({err})"
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            # As grpc binds: SO_REUSEADDR, so a port in TIME_WAIT is not "in use".
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as err:
                if err.errno == errno.EADDRINUSE:
                    return "the address is already in use (another process listens there)"
                return err.strerror or str(err)
    return ""


@dataclass
class RunningServer:
    """A started server and the parts it stops on shutdown."""

    server: grpc.aio.Server
    port: int
    service: SettlementService
    health: health.aio.HealthServicer
    store: Store
    stop_gateways: Callable[[], Awaitable[None]]
    relay: EventRelayTask | None = None
    sweeper: asyncio.Task[None] | None = None
    owner: PgOwner | None = None
    # The port's certificates (None: no TLS) and the per-call check, both reloaded on
    # SIGHUP.
    tls: CertificateReloader | None = None
    guard: Guard | None = None

    probes: ProbeServer | None = None
    readiness: Readiness | None = None
    refresher: asyncio.Task[None] | None = None
    # The --subscriber-events consumer (None: not asked for).
    feed: SubscriberFeedTask | None = None

    def reload(self) -> None:
        """SIGHUP: reads the TLS files and the access file again; open connections stay."""
        if self.tls is not None:
            self.tls.request_reload()
        if self.guard is not None:
            self.guard.reload()

    @property
    def metrics_port(self) -> int | None:
        """The port of /metrics, /livez and /readyz (None: --metrics-listen not set)."""
        return None if self.probes is None else self.probes.port

    async def stop(self, grace_s: float = DRAIN_GRACE_S) -> None:
        """Drains: NOT_SERVING, no new calls, in-flight calls finish within the grace."""
        if self.readiness is not None:
            self.readiness.set(False)
        for name in ("", SETTLEMENT_SERVICE):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.service.end_watches()  # event streams end now; they would only wait out the grace
        await self.server.stop(grace_s)
        if self.sweeper is not None:
            self.sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.sweeper
        if self.feed is not None:
            await self.feed.stop()
        if self.relay is not None:
            await self.relay.stop()
        await self.service.close()
        await self.service.router.close()
        await self.stop_gateways()
        self.service.book.close()
        self.store.close()
        if self.owner is not None:
            self.owner.close()
        if self.refresher is not None:
            self.refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.refresher
        if self.probes is not None:
            await self.probes.stop()


@dataclass
class EventRelayTask:
    """The outbox relay running beside the server, and how to stop it."""

    relay: OutboxRelay
    publisher: JetStreamPublisher
    task: asyncio.Task[None]
    stop_event: asyncio.Event

    @classmethod
    def start(cls, service: SettlementService, nats_url: str) -> EventRelayTask:
        publisher = JetStreamPublisher(nats_url)
        relay = OutboxRelay(
            service.outbox_unpublished,
            service.mark_published,
            publisher,
            lambda event: event_msg(event).SerializeToString(),
        )
        service.add_commit_listener(relay.wake)
        stop_event = asyncio.Event()
        task = asyncio.get_running_loop().create_task(relay.run(stop_event), name="event-relay")
        log.info("relaying settlement events to NATS JetStream at %s", nats_url)
        return cls(relay, publisher, task, stop_event)

    async def stop(self) -> None:
        """Publishes what the last batches wrote (when the broker answers), then stops."""
        self.stop_event.set()
        await self.task
        try:
            await asyncio.wait_for(self.relay.run_once(), RELAY_FLUSH_S)
        except Exception as err:  # the events stay in the outbox for the next start
            log.warning("event relay: could not flush at shutdown (%s)", err)
        await self.publisher.close()


async def create_server(
    settings: Settings,
    batching: BatchSettings | None = None,
    fraud_scorer: FraudScorer | None = None,
    security: SecuritySettings | None = None,
    guard: Guard | None = None,
) -> RunningServer:
    """Builds and starts the server on ``settings.listen`` (port 0 picks a free one).
    ``security``: TLS and the access file (None: neither, loopback only); ``guard``
    replaces the access file's check (tests pass one with their own clock)."""
    security = security or SecuritySettings()
    for warning in check_exposure(settings.listen, security):
        log.warning("%s", warning)
    check_listen(settings.listen)
    batching = dataclasses.replace(
        batching or BatchSettings(), queue_wait_max_ms=settings.queue_wait_max_ms
    )
    # Both read and checked before anything is opened: a bad file is one line at start.
    tls = CertificateReloader(security.tls) if security.tls is not None else None
    guard = guard or Guard.from_file(security.auth_file)
    enforce = settings.fraud_mode == "enforce"
    if not enforce:
        log.warning("fraud scoring in observe mode: assessed and reported, never declined")
    engine_config = None
    if settings.engine_config is not None:
        try:
            engine_config = settings.engine_config.read_text()
        except OSError as err:
            raise ConfigError(f"--engine-config: {err}") from None
    async with contextlib.AsyncExitStack() as undo:
        # Everything opened is closed again, in reverse, should a later step fail.
        # The databases' ownership before the store opens: with several databases,
        # opening it resolves what an earlier run left prepared, which only the owner may.
        owner = claim_databases(settings, "quickpay serve")
        if owner is not None:
            undo.callback(owner.close)
        store = open_store(settings, coordinate=True, owner=owner)
        undo.callback(store.close)
        key = fingerprint_key(settings.data_dir)
        limits = ledger_limits.for_serving(
            settings.ledger_dir,
            settings.ledger_payments_max,
            settings.ledger_transfers_max,
            settings.ledger_retention_s,
        )
        book = LedgerBook(Ledger.open(settings.ledger_dir, **limits.open_kwargs()))
        undo.callback(book.close)
        # The probes answer from before recovery: live, and not ready until it is done.
        readiness = Readiness()
        metrics = probes = None
        if settings.metrics_listen:
            metrics = readiness.metrics = Metrics()
            metrics.watch_ledger(book.ledger.usage, book.ledger.wal_stats, WAL_FLUSH_BUCKETS_NS)
            probes = await start_probes(settings.metrics_listen, metrics, readiness)
            undo.push_async_callback(probes.stop)
        # The subscriber table loads on a thread of its own while the gateways start
        # (their simulators are processes of their own): the two longest steps of a
        # start at carrier scale, overlapped. Nothing else touches the store meanwhile.
        try:
            engine = Engine(engine_config)
        except ConfigInvalid as err:
            raise ConfigError(f"--engine-config {settings.engine_config}: {err}") from None
        loading = asyncio.ensure_future(asyncio.to_thread(load_engine, engine, store))
        undo.push_async_callback(_finished, loading)  # before the store closes
        gateways, stop_gateways = await open_gateways(settings.gateways, settings.data_dir)
        undo.push_async_callback(stop_gateways)
        router = GatewayRouter(gateways)
        await router.start()
        undo.push_async_callback(router.close)
        if metrics is not None:
            if isinstance(store, SqliteStore):
                metrics.watch_sqlite(store.checkpoints, store.wal_bytes)
            names = [g.name for g in router.config.gateways]
            metrics.watch_breakers(lambda: {n: int(router.breaker_state(n)) for n in names})
        service = SettlementService(
            store,
            book,
            router,
            key,
            batching,
            fraud_scorer,
            enforce,
            fence=owner.check if owner is not None else lambda: None,
            metrics=metrics,
            engine=engine,
        )
        actions = await service.start(loading=loading)
        undo.push_async_callback(service.close)
        if actions:
            log.info("recovery finished %d unfinished payments and refunds", len(actions))
        server = grpc.aio.server(options=transport_options(settings))
        add_to_server(
            SettlementServicer(service, key, settings.data_dir / "mappings"),
            server,
            guard,
            metrics,
        )
        health_servicer = health.aio.HealthServicer()
        # Not ready until every part below has started (the servicer's default for "" is
        # SERVING), live from the first call it can answer.
        for name in ("", SETTLEMENT_SERVICE):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await health_servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            [SETTLEMENT_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME], server
        )
        port = listen_on(server, settings.listen, tls.credentials() if tls else None)
        relay = EventRelayTask.start(service, settings.nats_url) if settings.nats_url else None
        feed = None
        if settings.subscriber_events and settings.nats_url:
            feed = SubscriberFeedTask(
                SubscriberFeed(
                    settings.nats_url,
                    settings.subscriber_events,
                    service.apply_subscriber_changes,
                    add_subscriber_message,
                )
            )
            undo.push_async_callback(feed.stop)
        await server.start()
        undo.pop_all()
    for name in ("", SETTLEMENT_SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    readiness.set(True)
    refresher = asyncio.get_running_loop().create_task(
        refresh(metrics, book.ledger.usage, service.backlog, relay is not None),
        name="metrics-refresh",
    )
    sweeper = None
    if isinstance(store, TwoPhaseStore):
        sweeper = asyncio.get_running_loop().create_task(
            sweep_prepared(service, store), name="two-phase-sweep"
        )
    if owner is not None:
        owner.watch()  # from here a lost lock fences the engine until it is retaken
    running = RunningServer(
        server, port, service, health_servicer, store, stop_gateways, relay, sweeper, owner,
        tls, guard, probes, readiness, refresher,
    )  # fmt: skip
    running.feed = feed
    return running


async def _finished(task: asyncio.Future[int]) -> None:
    """Waits for a start step running on a thread (its error is the start's own, raised
    where it is awaited), so what it reads is not closed under it."""
    with contextlib.suppress(BaseException):
        await asyncio.shield(task)


def _protection(running: RunningServer) -> str:
    """How the port is protected, as the start line says it."""
    tls = running.tls
    said = "no TLS" if tls is None else "mTLS" if tls.files.client_ca is not None else "TLS"
    access = running.guard.access if running.guard is not None else None
    return f"{said}, {'access file ' + str(access.path) if access else 'no access file'}"


async def sweep_prepared(
    service: SettlementService, store: TwoPhaseStore, interval_s: float = SWEEP_INTERVAL_S
) -> None:
    """Resolves orphaned prepared transactions every ``interval_s`` until cancelled; a
    failed pass (a participant down) is logged and tried again next time."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await service.on_store_thread(store.sweep)
        except Exception as err:
            log.warning("two-phase sweep failed, retrying in %.0f s: %s", interval_s, err)


# The cyclic garbage collector's first threshold in the server: allocations minus
# deallocations of tracked objects between two young collections (CPython's default is
# 700). See ``tune_gc``.
GC_YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Sets the garbage collector for a server that has started: what it holds from
    start (modules, config, the gRPC and store objects) is frozen out of every
    collection, and young collections run at most once per GC_YOUNG_THRESHOLD new
    objects. A PayBatch call builds a few objects per payment, which at CPython's
    defaults triggered a young collection every few hundred payments and a full one
    every hundred young ones; perf put the collector at 8-9 % of the server's CPU under
    PayBatch (benches/RESULTS.md, "Hot path"). Cycles are still collected, later: the
    heap grows by at most a few young generations' worth of garbage."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


async def serve(
    settings: Settings,
    batching: BatchSettings | None = None,
    security: SecuritySettings | None = None,
) -> int:
    """Runs until SIGTERM or SIGINT, then drains and returns 0; SIGHUP reloads the TLS
    files and the access file."""
    running = await create_server(settings, batching, security=security)
    tune_gc()
    if running.guard is None or running.guard.access is None:
        # Said once the port is ours (not before: a refused start is its one line).
        log.warning("no --auth-file: every caller may call every RPC (allowed on loopback only)")
    host = settings.listen.rpartition(":")[0]
    log.info(
        "serving quickpay.v1.Settlement on %s:%d (%s; store %s, %d subscribers)",
        host,
        running.port,
        _protection(running),
        settings.database_url,
        running.service.engine.subscriber_count(),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, running.reload)
    # Scripts read this line to learn the port when --listen asked for port 0; it comes
    # after the signal handlers, so a SIGTERM sent on reading it drains.
    print(f"listening on {host}:{running.port}", flush=True)
    await stop.wait()
    log.info("draining: no new calls, up to %.0f s for calls in flight", DRAIN_GRACE_S)
    await running.stop(DRAIN_GRACE_S)
    log.info("stopped")
    return 0
