"""Provisioning rules: when a payment brings a line back into service.

Data-driven: each rule says, for a plan and a current line state, which balance
restores the line. The defaults are seeded into the ``provisioning_rules`` table and a
carrier edits the table, not the code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from quickpay_engine.domain import LineStatus, Plan


@dataclass(frozen=True, slots=True)
class ProvisioningRule:
    """``from_status`` lines of ``plan`` become ``to_status`` once the balance allows.

    For a postpaid line the balance is what is owed: the rule fires when it is at most
    ``owed_max_minor``. For a prepaid line the balance is credit: the rule fires when it
    is at least ``credit_min_minor``.
    """

    rule_id: str
    plan: Plan
    from_status: LineStatus
    to_status: LineStatus
    owed_max_minor: int = 0
    credit_min_minor: int = 1

    def fires(self, plan: Plan, status: LineStatus, balance_minor: int) -> bool:
        if plan is not self.plan or status is not self.from_status:
            return False
        if plan is Plan.POSTPAID:
            return balance_minor <= self.owed_max_minor
        return balance_minor >= self.credit_min_minor


DEFAULT_RULES = (
    ProvisioningRule(
        "postpaid-barred-paid-up", Plan.POSTPAID, LineStatus.BARRED, LineStatus.ACTIVE
    ),
    ProvisioningRule(
        "postpaid-suspended-paid-up", Plan.POSTPAID, LineStatus.SUSPENDED, LineStatus.ACTIVE
    ),
    ProvisioningRule(
        "prepaid-barred-has-credit", Plan.PREPAID, LineStatus.BARRED, LineStatus.ACTIVE
    ),
)


def state_after(
    rules: Iterable[ProvisioningRule], plan: Plan, status: LineStatus, balance_minor: int
) -> tuple[LineStatus, str]:
    """The line state after a settlement and the rule that set it ("" when none fired).

    A closed line never changes here: closing and reopening is the billing system's call.
    """
    if status is LineStatus.CLOSED:
        return status, ""
    for rule in rules:
        if rule.fires(plan, status, balance_minor):
            return rule.to_status, rule.rule_id
    return status, ""
