"""Stores: the billing database as a transaction participant. Knows no engine, no gateway."""

from quickpay_engine.store.rows import Decision
from quickpay_engine.store.sqlite import SqliteStore

__all__ = ["Decision", "SqliteStore"]
