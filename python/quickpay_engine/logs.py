"""How the engine's log lines look: `--log-format text` (the default) or `json`.

A JSON line (python-json-logger) carries ``time`` (UTC, RFC 3339), ``level``,
``logger`` and ``message``, then whichever of ``payment_id``, ``idempotency_key`` and
``caller`` the line is about, and ``exc_info`` for an error's traceback. A line about
one payment names it with ``extra=payment_fields(...)``; the caller's identity, where
the gRPC layer knows it, is set once per call in ``CALLER`` and added to every line
logged while that call runs.

Whatever the format, a run of 13 to 19 digits that passes the Luhn check (a card
number) is replaced before the line is written (invariant 7): no log line can carry
one, even from an exception's text.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The caller's identity (its certificate's subject or its token's subject), where the
# gRPC layer has established it for the call being served; "" when unknown.
CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("quickpay_caller", default="")
# Digits, possibly grouped by spaces or dashes, 13 to 19 of them: a card number's shape.
_PAN_SHAPE = re.compile(r"(?<![\d])\d(?:[ -]?\d){12,18}(?![\d])")
PAN_REDACTED = "[card number removed]"


def payment_fields(payment_id: str, idempotency_key: str = "") -> dict[str, str]:
    """``extra=`` for a log call about one payment: its id and key, as JSON fields."""
    fields = {"payment_id": payment_id}
    if idempotency_key:
        fields["idempotency_key"] = idempotency_key
    return fields


def _luhn_ok(digits: str) -> bool:
    total = 0
    for k, ch in enumerate(reversed(digits)):
        d = int(ch)
        if k % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def without_card_numbers(text: str) -> str:
    """``text`` with every card-number-shaped run of digits replaced."""

    def replace(match: re.Match[str]) -> str:
        digits = re.sub(r"[ -]", "", match.group(0))
        return PAN_REDACTED if _luhn_ok(digits) else match.group(0)

    return _PAN_SHAPE.sub(replace, text)


class CardNumberFilter(logging.Filter):
    """Removes card numbers from a record's message and traceback before any handler
    formats it; adds the caller's identity when the current call has one."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = without_card_numbers(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = without_card_numbers(record.exc_text)
        if not hasattr(record, "caller") and (caller := CALLER.get()):
            record.caller = caller
        return True


class EngineJsonFormatter(JsonFormatter):
    """One JSON object per line: time, level, logger, message, then the extras."""

    def add_fields(
        self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_record["time"] = datetime.fromtimestamp(record.created, UTC).isoformat(
            timespec="milliseconds"
        )
        log_record["level"] = record.levelname
        log_record["logger"] = record.name
        super().add_fields(log_record, record, message_dict)

    def formatException(self, ei: Any) -> str:
        """The traceback, without card numbers (this formatter does not read exc_text)."""
        text = super().formatException(ei)  # a list only when asked for one
        return without_card_numbers(text if isinstance(text, str) else "\n".join(text))


def json_formatter() -> logging.Formatter:
    """The JSON formatter (also for tests that capture lines)."""
    return EngineJsonFormatter("{message}", style="{", json_ensure_ascii=False)


def configure(log_format: str, verbose: bool = False) -> None:
    """Sets up the root logger for the whole process, on stderr. As logging.basicConfig
    does, it leaves a root logger that already has handlers alone (a host that embeds
    the CLI, or pytest's capture)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r}: expected one of {LOG_FORMATS}")
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(CardNumberFilter())
    handler.setFormatter(
        json_formatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
