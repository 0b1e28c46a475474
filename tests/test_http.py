"""The gateway adapters' HTTP transport (engine/src/python/http.rs) and the client's
use of it, against a real local HTTP server: each request ends answered, unreachable or
ambiguous, never in between; the requests of one call run at once, within a bound on
connections; requests of different event-loop turns never wait for each other; bad
settings are refused by name."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from quickpay_engine._engine import SEND_MANY_MAX, BatchTooLarge, HttpPool, HttpSetupError
from quickpay_engine.domain import MethodKind
from quickpay_engine.gateways.client import GatewayAmbiguous, GatewayClient, GatewayRefused
from quickpay_engine.gateways.config import GatewayConfig

ANSWERED, UNREACHABLE, AMBIGUOUS = 0, 1, 2


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.in_flight = 0
        self.in_flight_max = 0
        self.requests = 0
        self.lock = threading.Lock()
        self.release = threading.Event()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *_: object) -> None:
        pass

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests += 1
        if self.path == "/hang":
            time.sleep(2)
        elif self.path == "/drop":
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        elif self.path == "/cut":  # promises 100 bytes, sends 10, hangs up
            self.send_response(200)
            self.send_header("content-length", "100")
            self.end_headers()
            self.wfile.write(b'{"state": ')
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        elif self.path == "/moved":
            self._reply(302, b'{"state": "CAPTURED"}')
            return
        elif self.path == "/gate":
            with self.server.lock:
                self.server.in_flight += 1
                self.server.in_flight_max = max(self.server.in_flight_max, self.server.in_flight)
            self.server.release.wait(10)
            with self.server.lock:
                self.server.in_flight -= 1
        self._reply(200, b'{"ok": true}')

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        assert self.headers["content-type"] == "application/json"
        self._reply(404 if self.path == "/missing" else 201, body)

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("x-note", "hello")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[tuple[_Server, str]]:
    httpd = _Server()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.release.set()
        httpd.shutdown()
        httpd.server_close()


def pool(url: str, connections_max: int = 16) -> HttpPool:
    return HttpPool(url, connections_max=connections_max, keepalive_s=5.0)


def send(http: HttpPool, requests: list[tuple]) -> list[tuple]:
    return http.send_many(requests)


def in_background(http: HttpPool, requests: list[tuple]) -> tuple[threading.Thread, list]:
    """send_many on a thread of its own (it blocks until every request has ended)."""
    done: list[list[tuple]] = []
    thread = threading.Thread(target=lambda: done.append(http.send_many(requests)))
    thread.start()
    return thread, done


def wait_for(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_answers_carry_status_body_and_the_asked_header(server) -> None:
    _, url = server
    answers = send(
        pool(url),
        [
            ("POST", "/v1/payments/sale", b'{"amount_minor": 100}', 5.0, "X-Note"),
            ("POST", "/missing", b"{}", 5.0, None),
            ("GET", "/health?x=1", None, 5.0, "x-absent"),
        ],
    )
    assert answers == [
        (ANSWERED, 201, b'{"amount_minor": 100}', "hello", ""),
        (ANSWERED, 404, b"{}", None, ""),
        (ANSWERED, 200, b'{"ok": true}', None, ""),
    ]


def test_a_closed_port_is_unreachable_and_a_near_miss_answers(server) -> None:
    _, url = server
    ((outcome, status, body, _, error),) = send(
        pool(f"http://127.0.0.1:{free_port()}"), [("GET", "/health", None, 5.0, None)]
    )
    assert (outcome, status, body, error) == (UNREACHABLE, 0, b"", "connect")
    assert send(pool(url), [("GET", "/health", None, 5.0, None)])[0][0] == ANSWERED


def test_a_timeout_a_drop_and_a_cut_body_are_ambiguous(server) -> None:
    _, url = server
    answers = send(
        pool(url),
        [
            ("GET", "/hang", None, 0.2, None),
            ("GET", "/drop", None, 5.0, None),
            ("GET", "/cut", None, 5.0, None),
        ],
    )
    assert [(a[0], a[4]) for a in answers] == [
        (AMBIGUOUS, "timeout"),
        (AMBIGUOUS, "request"),
        (AMBIGUOUS, "body"),
    ]
    # The same server answers a request given the time it needs.
    assert send(pool(url), [("GET", "/hang", None, 5.0, None)])[0][:2] == (ANSWERED, 200)


def test_the_requests_of_one_call_are_in_flight_at_once(server) -> None:
    httpd, url = server
    thread, done = in_background(pool(url), [("GET", "/gate", None, 10.0, None)] * 12)
    wait_for(lambda: httpd.in_flight == 12)
    httpd.release.set()
    thread.join(15)
    assert httpd.in_flight_max == 12
    assert [a[:2] for a in done[0]] == [(ANSWERED, 200)] * 12


def test_past_the_connection_bound_requests_wait_and_never_leave_unsent(server) -> None:
    httpd, url = server
    http = pool(url, connections_max=2)
    holding, held = in_background(http, [("GET", "/gate", None, 10.0, None)] * 2)
    wait_for(lambda: httpd.in_flight == 2, 15.0)
    assert httpd.in_flight == 2
    # Both connections are held at the server: these wait, and their time runs out
    # before either is sent.
    assert http.send_many([("GET", "/health", None, 0.5, None)] * 2) == [
        (UNREACHABLE, 0, b"", None, "busy"),
        (UNREACHABLE, 0, b"", None, "busy"),
    ]
    httpd.release.set()
    holding.join(15)
    assert [a[:2] for a in held[0]] == [(ANSWERED, 200)] * 2
    assert httpd.requests == 2, "the two that waited were never sent"
    assert httpd.in_flight_max == 2


def test_bad_settings_and_oversized_calls_are_refused(server) -> None:
    httpd, url = server
    for bad in ("ftp://127.0.0.1/", "not a url", ""):
        with pytest.raises(HttpSetupError, match="gateway url"):
            pool(bad)
    with pytest.raises(HttpSetupError, match="keepalive_s"):
        HttpPool(url, connections_max=1, keepalive_s=-1.0)
    with pytest.raises(HttpSetupError, match="connections_max"):
        HttpPool(url, connections_max=0, keepalive_s=1.0)
    http = pool(url)
    good = ("GET", "/health", None, 1.0, None)
    with pytest.raises(HttpSetupError, match="HTTP method"):
        http.send_many([good, ("GE T", "/health", None, 1.0, None)])
    for timeout_s in (-1.0, float("inf"), float("nan"), 1e9):
        with pytest.raises(HttpSetupError, match="timeout_s"):
            http.send_many([good, ("GET", "/health", None, timeout_s, None)])
    with pytest.raises(BatchTooLarge):
        http.send_many([good] * (SEND_MANY_MAX + 1))
    assert httpd.requests == 0, "nothing of a refused call was sent"


# -- GatewayClient on the transport ------------------------------------------------------


def client_for(url: str) -> GatewayClient:
    return GatewayClient(
        GatewayConfig("local", url, frozenset({MethodKind.CARD}), frozenset({"EUR"}), pool_max=16)
    )


async def test_a_slow_request_holds_back_no_later_one_and_close_waits_for_it(server) -> None:
    import asyncio

    httpd, url = server
    client = client_for(url)
    await client.start()
    slow = asyncio.ensure_future(client._call("GET", "/gate", None, 10.0))
    await asyncio.sleep(0.1)  # a later turn of the event loop: sent on its own
    quick = asyncio.ensure_future(client._call("GET", "/health", None, 10.0))
    assert await asyncio.wait_for(quick, 5) == {"ok": True}
    assert not slow.done()
    closing = asyncio.ensure_future(client.close())
    await asyncio.sleep(0.2)
    assert not closing.done(), "close waits for the request under way"
    httpd.release.set()
    assert await asyncio.wait_for(slow, 5) == {"ok": True}
    await asyncio.wait_for(closing, 5)


async def test_the_client_maps_outcomes_and_a_cancelled_caller_harms_none(server) -> None:
    import asyncio

    from quickpay_engine.gateways.client import GatewayUnreachable

    httpd, url = server
    client = client_for(url)
    await client.start()
    try:
        with pytest.raises(GatewayRefused) as refused:
            await client._call("POST", "/missing", {}, 5.0)
        assert refused.value.status == 404
        with pytest.raises(GatewayAmbiguous, match="HTTP 302"):
            await client._call("GET", "/moved", None, 5.0)
        with pytest.raises(GatewayAmbiguous, match="timeout"):
            await client._call("GET", "/hang", None, 0.2)
        gone = client_for(f"http://127.0.0.1:{free_port()}")
        await gone.start()
        with pytest.raises(GatewayUnreachable):
            await gone._call("GET", "/health", None, 5.0)
        await gone.close()
        # A caller that gives up does not disturb the answers of the others.
        given_up = asyncio.ensure_future(client._call("GET", "/gate", None, 10.0))
        kept = asyncio.ensure_future(client._call("GET", "/gate", None, 10.0))
        await asyncio.sleep(0.2)
        given_up.cancel()
        httpd.release.set()
        assert await asyncio.wait_for(kept, 5) == {"ok": True}
        assert given_up.cancelled()
    finally:
        await client.close()


async def test_a_call_the_transport_refuses_fails_every_caller_of_its_turn(server) -> None:
    """A request the transport refuses (here a timeout out of range) sinks its turn's
    call before anything is sent: every caller of that turn hears "unreachable" at
    once, none waits for ever, and the server saw nothing."""
    import asyncio

    from quickpay_engine.gateways.client import GatewayUnreachable

    httpd, url = server
    client = client_for(url)
    await client.start()
    try:
        calls = [
            asyncio.ensure_future(client._call("GET", "/health", None, 5.0)),
            asyncio.ensure_future(client._call("GET", "/health", None, float("inf"))),
        ]
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
        assert all(isinstance(r, GatewayUnreachable) for r in results), results
        assert "HttpSetupError" in str(results[0])
        assert httpd.requests == 0
        # The next turn is sent as usual.
        assert await client._call("GET", "/health", None, 5.0) == {"ok": True}
    finally:
        await client.close()
