"""The parts of a running simulator that stay in Python, called by its Rust server.

The server (engine/src/python/sim/, see its http.rs for the wire protocol) answers
every sale, authorization, capture, void, refund and lookup without Python. Two rare
calls come here, on a thread of the server's with the GIL held: replacing the fault
model (PUT /sim/faults, checked by ``FaultModel``, the same check as the gateways file)
and building the settlement report (GET /v1/reports/settlement, the same code as the
offline export). A ValueError is the caller's mistake: the server answers 400
INVALID_REQUEST with its message.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import secrets
import urllib.parse
from pathlib import Path

from quickpay_engine.gateways.sim.faults import FaultModel
from quickpay_engine.gateways.sim.ledger import report_rows
from quickpay_engine.gateways.sim.report import inject_discrepancies, parse_inject, to_csv

log = logging.getLogger(__name__)

KEY_FILE = "fingerprint.key"
KEY_BYTES = 32


class Hooks:
    """What the server of the simulator ``name`` asks Python for."""

    def __init__(self, name: str, books: Path) -> None:
        self.name = name
        self.books = books

    def faults(self, body: bytes) -> str:
        """The new fault model, checked, as the JSON the server rolls and GET returns."""
        try:
            data = json.loads(body)
        except ValueError:
            raise ValueError("body must be a JSON object") from None
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
        try:
            model = FaultModel.from_dict(data)
        except TypeError as err:
            raise ValueError(str(err)) from None
        log.info("%s: fault model replaced: %s", self.name, model.to_dict())
        return json.dumps(model.to_dict())

    def report(self, query: str) -> tuple[str, str, str]:
        """A settlement report request's (CSV, injected as JSON, file name)."""
        params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True)[::-1])
        day = params.get("business_day", "")
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
            raise ValueError("business_day must be YYYY-MM-DD")
        counts = parse_inject(params.get("inject", ""))
        seed = int(params.get("inject_seed", "0"))
        rows, injected = inject_discrepancies(report_rows(self.books, day), counts, seed)
        notes = json.dumps([dataclasses.asdict(i) for i in injected])
        return to_csv(rows), notes, f"{self.name}-{day}.csv"


def fingerprint_key(data_dir: Path) -> bytes:
    """The simulator's fingerprint secret, created on first use with mode 0600."""
    path = data_dir / KEY_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    key = secrets.token_bytes(KEY_BYTES)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key
