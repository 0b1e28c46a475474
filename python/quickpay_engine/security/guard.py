"""The check every Settlement call passes before any work: who calls (UNAUTHENTICATED
when unknown), whether its roles allow the RPC (PERMISSION_DENIED) and whether its rate
limit does (RESOURCE_EXHAUSTED, with the wait in the trailing metadata).

One check per call: a PayBatch of a thousand payments is checked once. The caller is
then the call's ``current_caller()``, for the servicer to record with what it writes.
"""

from __future__ import annotations

import contextvars
import logging
import math
from pathlib import Path

import grpc

from quickpay_engine.errors import ConfigError
from quickpay_engine.security.access import (
    ANYONE,
    AccessFile,
    Caller,
    load_access_file,
    token_hash,
)
from quickpay_engine.security.limits import RateLimiter

log = logging.getLogger(__name__)

_CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("quickpay_caller", default=ANYONE)

# Trailing metadata of a rate-limited call: the wait before a token is there, in whole
# milliseconds and (as HTTP's Retry-After) in whole seconds, both rounded up.
RETRY_AFTER_MS = "retry-after-ms"
RETRY_AFTER = "retry-after"
_BEARER = "bearer "
# A token longer than this is refused unread (tokens the docs make are 43 characters).
TOKEN_CHARS_MAX = 512


def current_caller() -> Caller:
    """The caller of the call being served (``ANYONE`` without an access file)."""
    return _CALLER.get()


class Guard:
    """Identifies, authorizes and rate-limits each call. Without an access file every
    caller is ``ANYONE``: every role, no limit (loopback only, said at start)."""

    def __init__(self, access: AccessFile | None, limiter: RateLimiter | None = None) -> None:
        self.access = access
        self.limiter = limiter or RateLimiter()

    @classmethod
    def from_file(cls, path: Path | None, limiter: RateLimiter | None = None) -> Guard:
        return cls(load_access_file(path) if path is not None else None, limiter)

    def reload(self) -> None:
        """Reads the access file again (SIGHUP): rotated tokens, changed roles and limits
        hold from the next call. A file that does not load is logged; the old one stays."""
        if self.access is None:
            return
        try:
            self.access = load_access_file(self.access.path)
        except ConfigError as err:
            log.error("access file reload failed, keeping the one in use: %s", err)
            return
        log.info("access file %s reloaded: %d callers", self.access.path, len(self.access.callers))

    async def admit(self, rpc: str, context: grpc.aio.ServicerContext) -> Caller:
        """The caller of ``rpc``, made the call's ``current_caller``; else the call ends
        here with UNAUTHENTICATED, PERMISSION_DENIED or RESOURCE_EXHAUSTED."""
        access = self.access
        if access is None:
            return ANYONE
        caller = _identify(access, context)
        if isinstance(caller, str):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, caller)
            raise AssertionError("abort raises")  # for the type checker
        if not caller.may(rpc):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"caller {caller.name} ({', '.join(sorted(caller.roles)) or 'no role'})"
                f" may not call {rpc}",
            )
        wait_s = self.limiter.wait_s(caller, rpc)
        if wait_s > 0.0:
            context.set_trailing_metadata(
                ((RETRY_AFTER_MS, str(math.ceil(wait_s * 1000))),
                 (RETRY_AFTER, str(math.ceil(wait_s))))
            )  # fmt: skip
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"caller {caller.name}: over its rate limit for {rpc}; retry after"
                f" {math.ceil(wait_s * 1000)} ms",
            )
        _CALLER.set(caller)
        return caller


def _identify(access: AccessFile, context: grpc.aio.ServicerContext) -> Caller | str:
    """The caller named by the client certificate's SANs, else by the bearer token;
    else why neither names one."""
    names = context.peer_identities()  # the certificate's SANs (None without one)
    if names:
        for name in names:
            caller = access.by_cert_name.get(name.decode(errors="replace"))
            if caller is not None:
                return caller
    token = None
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            token = value
            break
    if token is None:
        if names:
            return "the client certificate names no caller of the access file"
        return "no caller identity: present a client certificate or 'authorization: Bearer TOKEN'"
    if token[: len(_BEARER)].lower() != _BEARER or len(token) > TOKEN_CHARS_MAX:
        return "authorization metadata: expected 'Bearer TOKEN'"
    caller = access.by_token_hash.get(token_hash(token[len(_BEARER) :].strip()))
    if caller is None:
        return "the bearer token is not one of the access file's"
    return caller
