"""OS names for the server's own threads.

CPython (before 3.14) leaves every thread it starts with the process's name, so
`top -H`, `perf`, `/proc/PID/task/*/comm` and benches/thread_cpu.py would see the store
writer, the ledger's threads and the gateway senders all as "quickpay". Each pool
names its threads with this as its initializer.
"""

from __future__ import annotations

import threading

from setproctitle import setthreadtitle

# The kernel keeps a thread's name to 15 bytes.
OS_NAME_MAX = 15


def name_os_thread() -> None:
    """Gives the calling thread its Python name as its OS name (cut to 15 bytes)."""
    setthreadtitle(threading.current_thread().name[:OS_NAME_MAX])
