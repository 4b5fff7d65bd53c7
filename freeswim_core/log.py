"""The ``freeswim`` logger and a log-once helper.

Attention patches run thousands of times per sampling run; anything they report
must be said once, not once per call.
"""
from __future__ import annotations

import logging
import threading

logger = logging.getLogger("freeswim")

_said: set[str] = set()
_lock = threading.Lock()


def log_once(key: str, level: int, msg: str, *args) -> None:
    """Log ``msg`` the first time ``key`` is seen in this process."""
    with _lock:
        if key in _said:
            return
        _said.add(key)
    logger.log(level, msg, *args)
