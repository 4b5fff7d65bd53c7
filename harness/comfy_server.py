"""Run a ComfyUI server headless in an isolated base directory and talk to it over HTTP.

The base directory (``--base-directory``) holds its own ``custom_nodes/`` (links to
this pack and to any extra node folders), ``models/``, ``input/`` and ``output/``,
so a run never touches the user's ComfyUI folders. Used by ``make demo`` and by
the server-level tests.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class PromptRejected(RuntimeError):
    """The server refused a prompt before running it (HTTP 400: validation of the graph)."""

    def __init__(self, body: str):
        try:
            self.details = json.loads(body)
        except ValueError:
            self.details = {"error": {"message": body}}
        super().__init__(self.describe())

    def describe(self) -> str:
        """One line per problem: the node and what the server said of it."""
        err = self.details.get("error") or {}
        lines = [f"ComfyUI refused the prompt: {err.get('message', 'invalid prompt')}"
                 + (f" ({err['details']})" if err.get("details") else "")]
        for nid, node in (self.details.get("node_errors") or {}).items():
            for e in node.get("errors", []):
                lines.append(f"  node {nid} ({node.get('class_type')}): {e.get('message')}"
                             + (f": {e['details']}" if e.get("details") else ""))
        return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_base(base: Path, extra_nodes: dict[str, Path] | None = None) -> Path:
    """Create a ComfyUI base directory with this pack (and ``extra_nodes``) linked in."""
    base = Path(base)
    nodes_dir = base / "custom_nodes"
    for sub in ("custom_nodes", "models/diffusion_models", "input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    links = {"comfyui-freeswim": REPO, **(extra_nodes or {})}
    for name, target in links.items():
        link = nodes_dir / name
        if link.is_symlink() or link.exists():
            if link.resolve() == Path(target).resolve():
                continue
            link.unlink()
        link.symlink_to(Path(target).resolve(), target_is_directory=True)
    return base


def host_server(host, base: Path, log_name: str = "server.log") -> "ComfyServer":
    """A server for a :class:`harness.hosts.Host`, run by the project's environment."""
    return ComfyServer(host.path, base, str(REPO / ".venv" / "bin" / "python"), Path(base) / log_name,
                       extra_args=host.server_args())


class ComfyServer:
    """A ComfyUI process on 127.0.0.1; use as a context manager."""

    def __init__(self, comfyui: Path, base: Path, python: str, log_path: Path, port: int | None = None,
                 extra_args: list[str] | None = None):
        self.comfyui = Path(comfyui).resolve()
        self.extra_args = list(extra_args or [])
        self.base = Path(base).resolve()
        self.python = python
        self.log_path = Path(log_path)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    # -- process ---------------------------------------------------------------------
    def start(self, timeout: float = 240.0) -> "ComfyServer":
        main = self.comfyui / "main.py"
        if not main.is_file():
            raise FileNotFoundError(f"no ComfyUI at {self.comfyui} (main.py missing)")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")
        cmd = [self.python, str(main), "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", str(self.base), "--disable-metadata",
               # the database goes with the base directory too (its default is inside the ComfyUI tree)
               "--database-url", f"sqlite:///{self.base / 'user' / 'comfyui.db'}", *self.extra_args]
        from harness.inductor_cache import server_cache
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **server_cache()}
        self.proc = subprocess.Popen(cmd, cwd=self.comfyui, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with code {self.proc.returncode}; log:\n{self.log()[-4000:]}")
            try:
                self.get("/system_stats", timeout=2)
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout:.0f}s; log:\n{self.log()[-4000:]}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- HTTP --------------------------------------------------------------------------
    def get(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read())

    def post(self, path: str, payload: dict, timeout: float = 30):
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            body = e.read().decode(errors="replace")
            if e.code == 400 and path == "/prompt":
                raise PromptRejected(body) from None
            raise RuntimeError(f"POST {path} failed ({e.code}): {body}") from e

    def reports(self, prompt_id: str) -> list[dict]:
        """FreeSwim's run reports of one prompt (one per sampling run, in order)."""
        return self.get(f"/freeswim/reports?prompt_id={prompt_id}")

    def run_prompt_timed(self, prompt: dict, timeout: float = 900.0) -> tuple[dict, list[tuple[str, float]]]:
        """Like :meth:`run_prompt`, also returning (node id, seconds) in execution order, from the
        server's websocket ``executing`` events (cached nodes do not appear)."""
        import asyncio

        import aiohttp

        async def run():
            client_id = uuid.uuid4().hex
            marks: list[tuple[str | None, float]] = []
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}") as ws:
                    prompt_id = self.post("/prompt", {"prompt": prompt, "client_id": client_id})["prompt_id"]
                    deadline = time.time() + timeout
                    while time.time() < deadline:
                        msg = await ws.receive(timeout=deadline - time.time())
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            continue
                        data = json.loads(msg.data)
                        body = data.get("data", {})
                        if body.get("prompt_id") != prompt_id:
                            continue
                        if data["type"] == "executing":
                            marks.append((body.get("node"), time.time()))
                            if body.get("node") is None:
                                break
                        elif data["type"] in ("execution_error", "execution_interrupted"):
                            marks.append((None, time.time()))
                            break
            timings = [(node, t1 - t0) for (node, t0), (_, t1) in zip(marks, marks[1:]) if node is not None]
            return prompt_id, timings

        prompt_id, timings = asyncio.run(run())
        return {**self.get(f"/history/{prompt_id}")[prompt_id], "prompt_id": prompt_id}, timings

    def run_prompt(self, prompt: dict, timeout: float = 600.0) -> dict:
        """Queue an API-format graph and wait for its history entry."""
        client_id = uuid.uuid4().hex
        prompt_id = self.post("/prompt", {"prompt": prompt, "client_id": client_id})["prompt_id"]
        deadline = time.time() + timeout
        while time.time() < deadline:
            hist = self.get(f"/history/{prompt_id}")
            if prompt_id in hist:
                entry = hist[prompt_id]
                status = entry.get("status", {})
                if status.get("completed") or status.get("status_str") in ("success", "error"):
                    return {**entry, "prompt_id": prompt_id}
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited while running the prompt; log:\n{self.log()[-4000:]}")
            time.sleep(0.25)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f}s")
