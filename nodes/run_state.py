"""The reports of finished sampling runs, kept for the routes, the demo and the tests.

A run's planner (``freeswim_core.planner.Run``) is created by the OUTER_SAMPLE wrapper when
a sampling run starts and closed in its ``finally``, so nothing carries over between runs,
prompts, models or after an interrupt; its :class:`RunReport` is published here: logged as
one JSON line, kept among the recent ones, and sent to listeners (the server's UI event).
"""
from __future__ import annotations

import collections
import json
import threading
from typing import Optional

from ..freeswim_core.log import logger
from ..freeswim_core.planner import RunReport

RECENT_REPORTS = 32

_recent: collections.deque = collections.deque(maxlen=RECENT_REPORTS)
_lock = threading.Lock()
_runs = 0
_listeners: list = []          # called with each published report (the server's UI event)


def add_listener(fn) -> None:
    if fn not in _listeners:
        _listeners.append(fn)


def publish(report: RunReport) -> None:
    """Keep the report among the recent ones (``recent_reports``) and log it as one JSON line."""
    global _runs
    with _lock:
        _runs += 1
        report.run = _runs
        _recent.append(report.as_dict())
    logger.info("FreeSwim run report: %s", json.dumps(report.as_dict(), sort_keys=True))
    for listener in list(_listeners):
        listener(report.as_dict())


def recent_reports(prompt_id: Optional[str] = None) -> list[dict]:
    """Reports of the most recent sampling runs, oldest first (of one prompt, if given)."""
    with _lock:
        return [r for r in _recent if prompt_id is None or r.get("prompt_id") == prompt_id]
