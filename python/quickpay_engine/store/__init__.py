"""Stores: the billing database as a transaction participant. Knows no engine, no gateway."""

from quickpay_engine.store.sqlite import Decision, SqliteStore

__all__ = ["Decision", "SqliteStore"]
