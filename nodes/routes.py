"""HTTP routes of the pack on ComfyUI's server.

``GET /freeswim/reports[?prompt_id=...]``: the reports of the most recent sampling
runs (``run_state.RunReport`` as JSON, oldest first). Scripts and the demo read
what a run did here instead of parsing the server log.
"""
from __future__ import annotations

from .run_state import recent_reports

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

    _registered = True
