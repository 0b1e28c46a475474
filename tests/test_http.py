"""The gateway adapters' HTTP transport (engine/src/python/http.rs) against a real
local HTTP server: each request ends answered, unreachable or ambiguous, never in
between; the requests of one call run at once; bad settings are refused by name."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from quickpay_engine._engine import SEND_MANY_MAX, BatchTooLarge, HttpPool, HttpSetupError

ANSWERED, UNREACHABLE, AMBIGUOUS = 0, 1, 2


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.in_flight = 0
        self.in_flight_max = 0
        self.lock = threading.Lock()
        self.release = threading.Event()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *_: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/hang":
            time.sleep(2)
        elif self.path == "/drop":
            self.connection.shutdown(socket.SHUT_RDWR)
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


def pool(url: str) -> HttpPool:
    return HttpPool(url, idle_per_host_max=8, keepalive_s=5.0)


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_answers_carry_status_body_and_the_asked_header(server) -> None:
    _, url = server
    answers = pool(url).send_many(
        [
            ("POST", "/v1/payments/sale", b'{"amount_minor": 100}', 5.0, "X-Note"),
            ("POST", "/missing", b"{}", 5.0, None),
            ("GET", "/health?x=1", None, 5.0, "x-absent"),
        ]
    )
    assert answers == [
        (ANSWERED, 201, b'{"amount_minor": 100}', "hello", ""),
        (ANSWERED, 404, b"{}", None, ""),
        (ANSWERED, 200, b'{"ok": true}', None, ""),
    ]


def test_a_closed_port_is_unreachable_and_a_near_miss_answers(server) -> None:
    _, url = server
    ((outcome, status, body, _, error),) = pool(f"http://127.0.0.1:{free_port()}").send_many(
        [("GET", "/health", None, 5.0, None)]
    )
    assert (outcome, status, body, error) == (UNREACHABLE, 0, b"", "connect")
    assert pool(url).send_many([("GET", "/health", None, 5.0, None)])[0][0] == ANSWERED


def test_a_timeout_and_a_dropped_connection_are_ambiguous(server) -> None:
    _, url = server
    answers = pool(url).send_many(
        [("GET", "/hang", None, 0.2, None), ("GET", "/drop", None, 5.0, None)]
    )
    assert [(a[0], a[4]) for a in answers] == [(AMBIGUOUS, "timeout"), (AMBIGUOUS, "request")]
    # The same server answers a request given the time it needs.
    assert pool(url).send_many([("GET", "/hang", None, 5.0, None)])[0][:2] == (ANSWERED, 200)


def test_the_requests_of_one_call_are_in_flight_at_once(server) -> None:
    httpd, url = server
    http = pool(url)
    done: list[list] = []
    caller = threading.Thread(
        target=lambda: done.append(http.send_many([("GET", "/gate", None, 10.0, None)] * 12))
    )
    caller.start()
    for _ in range(500):
        if httpd.in_flight == 12:
            break
        time.sleep(0.01)
    httpd.release.set()
    caller.join(15)
    assert httpd.in_flight_max == 12
    assert [a[:2] for a in done[0]] == [(ANSWERED, 200)] * 12


def test_bad_settings_and_oversized_calls_are_refused(server) -> None:
    _, url = server
    for bad in ("ftp://127.0.0.1/", "not a url", ""):
        with pytest.raises(HttpSetupError, match="gateway url"):
            pool(bad)
    with pytest.raises(HttpSetupError, match="keepalive_s"):
        HttpPool(url, idle_per_host_max=1, keepalive_s=-1.0)
    with pytest.raises(HttpSetupError, match="HTTP method"):
        pool(url).send_many([("GE T", "/health", None, 1.0, None)])
    with pytest.raises(BatchTooLarge):
        pool(url).send_many([("GET", "/health", None, 1.0, None)] * (SEND_MANY_MAX + 1))
