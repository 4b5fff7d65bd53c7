"""Drive the real ComfyUI frontend in headless Chromium over the DevTools protocol."""
from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request

import aiohttp

from harness.comfy_server import free_port

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--window-size=1600,1000", "--hide-scrollbars",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Frontend:
    """The ComfyUI web app served by ``server_url``, open in a headless Chromium page."""

    def __init__(self, server_url: str):
        self.server_url = server_url
        self.port = free_port()
        self.profile = tempfile.mkdtemp(prefix="freeswim-chromium-")
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen([chromium_path(), *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                                      f"--remote-debugging-port={self.port}", self.server_url],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                tabs = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json", timeout=2).read())
                self.ws_url = next(t for t in tabs if t["type"] == "page")["webSocketDebuggerUrl"]
                break
            except Exception:
                time.sleep(0.5)
        else:
            raise TimeoutError("Chromium did not open its DevTools endpoint")
        if not self.evaluate("!!(window.app && window.app.graph)", wait_for_truthy=120):
            raise TimeoutError("the ComfyUI frontend did not start")
        return self

    def __exit__(self, *exc):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        shutil.rmtree(self.profile, ignore_errors=True)

    def evaluate(self, expression: str, wait_for_truthy: float = 0):
        """Evaluate JavaScript in the page (awaiting promises); returns the JSON value."""
        async def run():
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(self.ws_url, max_msg_size=0) as ws:
                    deadline = time.time() + wait_for_truthy
                    while True:
                        await ws.send_json({"id": 1, "method": "Runtime.evaluate",
                                            "params": {"expression": expression, "awaitPromise": True,
                                                       "returnByValue": True}})
                        while True:
                            msg = await ws.receive_json()
                            if msg.get("id") == 1:
                                break
                        if "error" in msg:       # e.g. the page is between two documents (a reload)
                            raise RuntimeError(f"DevTools: {msg['error']}")
                        result = msg["result"]
                        if "exceptionDetails" in result:
                            raise RuntimeError(json.dumps(result["exceptionDetails"])[:2000])
                        value = result["result"].get("value")
                        if value or time.time() >= deadline:
                            return value
                        await asyncio.sleep(0.5)
        return asyncio.run(run())

    def reload(self, timeout: float = 120) -> None:
        """Load the page again, as a user pressing F5 (settings kept by the server apply at start),
        and wait until the app is up."""
        # the old document is marked, so that its app is not taken for the new one's
        self.evaluate("(() => { window.__beforeReload = true; setTimeout(() => location.reload(), 50); "
                      "return true; })()")
        deadline = time.time() + timeout
        while time.time() < deadline:
            time.sleep(0.5)
            try:
                if self.evaluate("!window.__beforeReload && !!(window.app && window.app.graph "
                                 "&& window.app.extensionManager)"):
                    return
            except RuntimeError:                # between documents, or the app's scripts still loading
                pass
        raise TimeoutError("the ComfyUI frontend did not start again after a reload")

    def screenshot(self, path) -> None:
        """Save a PNG of the page (the canvas as the user sees it)."""
        import base64

        async def run():
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(self.ws_url, max_msg_size=0) as ws:
                    await ws.send_json({"id": 2, "method": "Page.captureScreenshot", "params": {"format": "png"}})
                    while True:
                        msg = await ws.receive_json()
                        if msg.get("id") == 2:
                            return msg["result"]["data"]
        data = asyncio.run(run())
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def load_and_convert(self, workflow: dict) -> tuple[int, dict]:
        """Load a UI-format workflow the way the app does and return (node count, the app's own
        API-format prompt from graphToPrompt)."""
        js = (f"(async () => {{ await window.app.loadGraphData({json.dumps(workflow)}); "
              "const p = await window.app.graphToPrompt(); "
              "return JSON.stringify({n: window.app.graph.nodes.length, output: p.output}); })()")
        res = json.loads(self.evaluate(js))
        return res["n"], res["output"]
