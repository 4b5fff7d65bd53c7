"""The host matrix: every test that touches ComfyUI runs on each built host.

A test touches ComfyUI when it uses the ``comfy_host`` fixture, directly or through
``comfy`` (the host in process) or a server fixture; it is then parametrised over
the hosts of ``scripts/hosts.py`` with the host in its id (``[comfyui-0.33.0]``).
One process can import only one ComfyUI, so under pytest-xdist (``make test``:
``-n 2``) each host's tests form one work unit, which xdist runs in one worker;
tests that need no host are shared out between the workers. In a plain
``pytest`` run the first host imported wins and the other host's in-process tests
are skipped, saying why.
"""
from __future__ import annotations

import os
import re

import pytest

from harness.hosts import discover

HOSTS, SKIPPED = discover()
HOST_IN_ID = re.compile(r"[\[-](comfyui-\d+(?:\.\d+)*)[\]-]")


def pytest_report_header(config):
    lines = ["ComfyUI hosts: " + (", ".join(f"{h.id} ({h.path})" for h in HOSTS) or "none")]
    return lines + SKIPPED


def pytest_terminal_summary(terminalreporter):
    for line in SKIPPED:
        terminalreporter.write_line(f"host matrix: {line}")


def pytest_configure(config):
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        # Two workers on a small machine: one torch thread pool each, not two competing.
        import torch
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    # Kernels compiled on the CPU are specialised for the thread count: one cache per count.
    from harness.inductor_cache import cache_for_threads
    cache_for_threads()


def pytest_generate_tests(metafunc):
    if "comfy_host" in metafunc.fixturenames:
        if not HOSTS:
            pytest.exit("no ComfyUI host is built: " + "; ".join(SKIPPED), returncode=4)
        metafunc.parametrize("comfy_host", HOSTS, ids=[h.id for h in HOSTS], scope="session")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """xdist scheduling with one work unit per host: every test whose id names a host goes to
    the worker that runs that host; tests without a host are single units shared out."""
    from xdist.scheduler import LoadScopeScheduling

    class HostScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            m = HOST_IN_ID.search(nodeid)
            return m.group(1) if m else nodeid

    return HostScheduling(config, log)


@pytest.fixture(scope="session")
def comfy(comfy_host):
    """The real ComfyUI host in this process, with the pack loaded by ComfyUI's loader."""
    import harness.inprocess as comfy_env
    try:
        comfy_env.comfy_ready(comfy_host)
    except comfy_env.HostConflict as e:
        pytest.skip(str(e))
    return comfy_env

