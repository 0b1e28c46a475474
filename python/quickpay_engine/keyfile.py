"""Secrets the installation keeps in its data dir (the request fingerprint key, the
audit trail's key): 32 random bytes each, made once, readable by the owner only."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from quickpay_engine.errors import ConfigError

KEY_BYTES = 32


def secret_key(path: Path) -> bytes:
    """The key in ``path``, created on first use (0600); ConfigError when the file is
    open to group or others."""
    if not path.exists():
        install_key(path, secrets.token_bytes(KEY_BYTES))
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        # A key others can read lets them forge what it protects (fingerprints, the
        # audit chain): refuse to start rather than go on with it.
        raise ConfigError(
            f"{path} is readable or writable by group or others (mode {mode:04o}): the key"
            f" must be the owner's alone; run chmod 600 {path}"
        )
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{path} must hold {KEY_BYTES} bytes; it holds {len(key)}")
    return key


def install_key(path: Path, key: bytes) -> None:
    """Writes ``key`` to ``path`` (0600) where there is no file yet; where another
    process won the race, theirs stands. Written whole to a temporary name, fsynced,
    then linked into place: a crash leaves no file or a whole one, never an empty key
    that blocks every start."""
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{path.name}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # fails if another process won the race: theirs stands
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
