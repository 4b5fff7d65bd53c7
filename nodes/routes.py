"""HTTP routes of the pack on ComfyUI's server.

``GET /freeswim/reports[?prompt_id=...]``: the reports of the most recent sampling
runs (``run_state.RunReport`` as JSON, oldest first). Scripts and the demo read
what a run did here instead of parsing the server log.

``POST /freeswim/plan``: the memory planner's answer for the UI's panel
(``plan_request``); a bad request gets HTTP 400 with ``{"error": ...}`` naming the field.

``GET /freeswim/families``: what the panel needs of each model family (the nodes that make
its latent), so the browser holds no table of its own.

Each run report is also sent to the browser as a ``freeswim.report`` event with the id of
the node that ran it, for the panel to show on that node.
"""
from __future__ import annotations

import json
import logging

from .families import families_payload
from .plan_request import BadRequest, plan_from_request
from .run_state import add_listener, recent_reports

REPORT_EVENT = "freeswim.report"

_registered = False


def register() -> None:
    """Add the routes to the running server; a no-op without one (in-process use, tests)."""
    global _registered
    if _registered:
        return
    try:
        from aiohttp import web
        from server import PromptServer
    except ImportError:
        return
    server = getattr(PromptServer, "instance", None)
    if server is None:
        return

    @server.routes.get("/freeswim/reports")
    async def reports(request):
        return web.json_response(recent_reports(request.query.get("prompt_id")))

    @server.routes.get("/freeswim/families")
    async def families(request):
        return web.json_response(families_payload())

    @server.routes.post("/freeswim/plan")
    async def plan(request):
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            return web.json_response({"error": "the request body is not JSON"}, status=400)
        try:
            return web.json_response(plan_from_request(body))
        except BadRequest as e:
            return web.json_response({"error": str(e)}, status=400)

    def send_report(report: dict) -> None:
        if report.get("node_id") is None:
            return
        try:
            server.send_sync(REPORT_EVENT, {"node": report["node_id"], "prompt_id": report.get("prompt_id"),
                                            "report": report})
        except Exception as e:      # the browser is a spectator: a dropped event must not fail a run
            logging.getLogger("freeswim").debug("run report not sent to the browser: %s", e)

    add_listener(send_report)
    _registered = True
