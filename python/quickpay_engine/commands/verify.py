"""`quickpay verify`: checks the invariants across the store and exits non-zero on any break."""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

from quickpay_engine._engine import LEDGER_BATCH_MAX, EngineError, ids_array
from quickpay_engine.commands import READS, add_command
from quickpay_engine.commands.audit import anchored_head
from quickpay_engine.config import settings_from
from quickpay_engine.domain import PaymentStatus
from quickpay_engine.ledger_limits import open_ledger
from quickpay_engine.settlement.ledger_book import (
    ROLLED_BACK,
    SETTLED,
    LedgerBook,
    subscriber_account,
)
from quickpay_engine.storage import Store, open_store
from quickpay_engine.store.sqlite_library import read_only_uri

# At most this many examples of each broken saga invariant are listed.
EXAMPLES_MAX = 20
_SETTLED = (PaymentStatus.SETTLED, PaymentStatus.REFUNDED, PaymentStatus.PARTIALLY_REFUNDED)


def register(subparsers: argparse._SubParsersAction) -> None:
    add_command(
        subparsers, "verify", "check the settlement invariants; non-zero exit on any break"
    ).set_defaults(run=run, data_dir_access=READS)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if not settings.postgres and not settings.sqlite_path.exists():
        print(f"quickpay verify: no database at {settings.sqlite_path}")
        return 2
    try:
        anchor = anchored_head(settings.ledger_dir)
    except EngineError:
        anchor = None  # the ledger's own check below says why it cannot be opened
    store = open_store(settings, checking=True)
    try:
        problems = (
            store.verify(anchor)
            + _saga_problems(store, settings.ledger_dir)
            + _gateway_problems(store, settings.data_dir)
        )
    finally:
        store.close()
    if not problems:
        print(f"verify: all invariants hold ({settings.database_url})")
        return 0
    print(f"verify: {len(problems)} problem(s) in {settings.database_url}")
    for line in problems:
        print(f"  {line}")
    return 1


def _saga_problems(store: Store, ledger_dir: Path) -> list[str]:
    """Where the ledger and the store disagree, or a payment is left half done."""
    problems: list[str] = []
    journal = store.attempts()
    problems += [
        f"payment journalled but not finished (run `quickpay recover`): {p}"
        for p in sorted(journal)[:EXAMPLES_MAX]
    ]
    problems += [
        f"balance adjustment journalled but not applied (run `quickpay recover`): {a.adjustment_id}"
        for a in store.pending_adjustments()[:EXAMPLES_MAX]
    ]
    if not ledger_dir.exists():
        return problems
    try:
        book = LedgerBook(open_ledger(ledger_dir))
    except EngineError as err:
        return [*problems, f"ledger at {ledger_dir} could not be opened: {err}"]
    try:
        unfinished = book.unfinished()
        problems += [
            f"payment left unfinished in the ledger (run `quickpay recover`): {p}"
            for p in sorted(unfinished)[:EXAMPLES_MAX]
        ]
        rows = store.settled_or_declined_ids()
        states = book.states([p for p, _ in rows])
        broken = []
        for (payment_id, status), state in zip(rows, states, strict=True):
            if state == 0:
                continue  # aged out of the ledger's retention window
            if PaymentStatus(status) in _SETTLED and state != SETTLED:
                broken.append(f"settled in billing, not in the ledger: {payment_id}")
            elif PaymentStatus(status) not in _SETTLED and state not in (ROLLED_BACK,):
                broken.append(f"declined in billing, hold not voided in the ledger: {payment_id}")
        problems += broken[:EXAMPLES_MAX]
        problems += _balance_problems(store, book)
    finally:
        book.close()
    return problems


def _balance_problems(store: Store, book: LedgerBook) -> list[str]:
    """Account by account, what the ledger holds (posted: payments in less refunds
    out, plus balance adjustments) against billing's records of the same. A refund
    debited from another subscriber's ledger account breaks two of these while billing
    and the gateway agree."""
    nets = store.account_nets()
    broken: list[str] = []
    for start in range(0, len(nets), LEDGER_BATCH_MAX):
        chunk = nets[start : start + LEDGER_BATCH_MAX]
        found, _, debits, _, credits = book.ledger.balances(
            ids_array([subscriber_account(account_id) for account_id, _, _ in chunk])
        )
        for (account_id, currency, billed), has, d, c in zip(
            chunk, found.tolist(), debits.tolist(), credits.tolist(), strict=True
        ):
            held = int(c) - int(d) if has else 0
            if held != billed:
                broken.append(
                    f"ledger balance not billing's movements (account, ledger, billing):"
                    f" {account_id}, {held}, {billed} {currency}"
                )
    return broken[:EXAMPLES_MAX]


# Gateway states in which the gateway holds (or held, then refunded) the money.
_MONEY_MOVED = ("CAPTURED", "REFUNDED", "PARTIALLY_REFUNDED")


def _gateway_problems(store: Store, data_dir: Path) -> list[str]:
    """Billing against the books of the bundled gateway simulators kept in this data
    dir: every capture credited exactly once with its reference and refunds, and every
    settled payment captured. (External gateways: `quickpay reconcile` their reports.)"""
    from quickpay_engine.gateways.supervisor import sim_data_dir

    problems: list[str] = []
    for books in sorted((data_dir / "gateways").glob("*/ledger.sqlite3")):
        name = books.parent.name
        assert sim_data_dir(data_dir, name) == books.parent
        db = sqlite3.connect(read_only_uri(books), uri=True)
        try:
            at_gateway = {
                ref: (gref, state, refunded)
                for ref, gref, state, refunded in db.execute(
                    "SELECT merchant_reference, gateway_reference, state, refunded_minor"
                    " FROM payments"
                )
            }
        finally:
            db.close()
        billed = store.gateway_payments(name)
        broken: list[str] = []
        for payment_id, (gref, state, refunded) in at_gateway.items():
            if state not in _MONEY_MOVED:
                continue
            mine = billed.get(payment_id)
            if mine is None or PaymentStatus(mine[0]) not in _SETTLED:
                broken.append(f"{name} captured {payment_id}, billing did not credit it")
            elif mine[1] != gref or mine[2] != refunded:
                broken.append(
                    f"{name} holds {payment_id} as {gref} refunded {refunded}, billing as"
                    f" {mine[1]} refunded {mine[2]}"
                )
        for payment_id, (status, _, _) in billed.items():
            if PaymentStatus(status) in _SETTLED and (
                at_gateway.get(payment_id, ("", "", 0))[1] not in _MONEY_MOVED
            ):
                broken.append(f"billing settled {payment_id}, {name} holds no capture of it")
        problems += broken[:EXAMPLES_MAX]
    return problems
