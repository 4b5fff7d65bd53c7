"""One inductor cache per CPU thread count, for the processes this repository starts.

Inductor bakes the CPU thread count into the kernels it compiles (per-thread scratch buffers,
``num_threads`` clauses) but, in torch 2.11, leaves it out of its on-disk cache key: a process
that loads a kernel compiled by one with another thread count can write past those buffers
and crash ("munmap_chunk(): invalid pointer"). The test workers run one thread each, a plain
``pytest``, the benchmarks and the demo's server run with every core: each thread count gets a
cache folder of its own under ``.cache/inductor/``. The pack's own flex kernel names its thread
count in its compile options (``freeswim_core.attention.flex``), so it is safe in any cache;
this covers everything else a process compiles (ComfyUI's TorchCompileModel, the benchmarks'
reference-style flex).

A ``TORCHINDUCTOR_CACHE_DIR`` the user set is kept; one set here (marked by
``FREESWIM_INDUCTOR_CACHE``) is replaced in a child process that runs with another thread count.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARK = "FREESWIM_INDUCTOR_CACHE"


def _users_own() -> str | None:
    """The ``TORCHINDUCTOR_CACHE_DIR`` the user set, if any (not one set here)."""
    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    return chosen if chosen and chosen != os.environ.get(MARK) else None


def cache_for_threads(threads: int | None = None) -> str:
    """Point inductor's cache at ``.cache/inductor/cpu-threads-<n>`` for this process's thread
    count (call after ``torch.set_num_threads`` and before anything compiles); returns the folder."""
    import torch
    own = _users_own()
    if own:
        return own
    n = torch.get_num_threads() if threads is None else threads
    path = str(REPO / ".cache" / "inductor" / f"cpu-threads-{n}")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.environ[MARK] = path
    return path


def server_cache() -> dict[str, str]:
    """Environment for a ComfyUI server this repository starts: a folder of its own per thread setting
    (every core unless ``OMP_NUM_THREADS`` says otherwise)."""
    if _users_own():
        return {}
    threads = os.environ.get("OMP_NUM_THREADS") or "default"     # what the server's torch will run with
    path = str(REPO / ".cache" / "inductor" / f"comfyui-server-threads-{threads}")
    return {"TORCHINDUCTOR_CACHE_DIR": path, MARK: path}
