"""Stores: the billing database as a transaction participant. Knows no engine, no gateway."""

import sqlite3

import psycopg

from quickpay_engine.store.rows import Decision
from quickpay_engine.store.sqlite import SqliteStore

# What a store raises when its database is out of reach for a while (restarted, failed
# over, the disk full or locked): the operation did not happen and may be tried again.
# A constraint or a bug is none of these.
UNREACHABLE = (sqlite3.OperationalError, psycopg.OperationalError)

__all__ = ["UNREACHABLE", "Decision", "SqliteStore"]
