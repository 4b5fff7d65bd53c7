"""What is live at the peak of a CUDA run: read from PyTorch's allocator history.

``torch.cuda.memory._record_memory_history()`` records every block the caching allocator
hands out and takes back, with the Python frames that asked for it;
``torch.cuda.memory._snapshot()["device_traces"][device]`` returns those events. Replaying
them finds the moment the most bytes were live and which code holds them then, grouped by
the innermost frame outside torch (a line of the pack or of ComfyUI). The GPU suite's memory
cases put that list beside the traced peak, so a difference between the real call and its
trace (``harness/memory_trace.py``) names the code that makes it.
"""
from __future__ import annotations

from collections import Counter


def _site(frames: list[dict]) -> str:
    """The innermost frame that is not torch's own (or the innermost, if all are)."""
    for f in frames or ():
        name = f.get("filename", "")
        if "/torch/" not in name and not name.startswith("<"):
            parts = name.split("/")
            return f"{'/'.join(p for p in parts[-3:] if p)}:{f.get('line')} {f.get('name')}"
    if frames:
        f = frames[0]
        return f"{f.get('filename', '?').split('/')[-1]}:{f.get('line')} {f.get('name')}"
    return "unknown"


def peak_sites(events: list[dict], top: int = 12) -> tuple[int, list[tuple[str, int]]]:
    """(highest live total in bytes, [(site, live bytes at that moment)] largest first, at most
    ``top`` sites and one "other"). A block counts from its ``alloc`` to its ``free_completed``
    (or ``free_requested`` where a trace has no completions)."""
    completes = any(e.get("action") == "free_completed" for e in events)
    free_action = "free_completed" if completes else "free_requested"

    def replay(upto: int) -> tuple[dict, int, int]:
        live: dict[int, tuple[int, str]] = {}
        total = peak = peak_at = 0
        for i, e in enumerate(events[:upto]):
            action = e.get("action")
            if action == "alloc":
                live[e["addr"]] = (e["size"], e.get("frames"))
                total += e["size"]
                if total > peak:
                    peak, peak_at = total, i + 1
            elif action == free_action and e["addr"] in live:
                total -= live.pop(e["addr"])[0]
        return live, peak, peak_at

    _, peak, peak_at = replay(len(events))        # where the peak is, then what is live there
    at_peak, _, _ = replay(peak_at)
    by_site = Counter()
    for size, frames in at_peak.values():
        by_site[_site(frames)] += size
    ranked = by_site.most_common()
    out = ranked[:top]
    rest = sum(n for _, n in ranked[top:])
    if rest:
        out.append(("other", rest))
    return peak, out


def record_history(enabled: bool) -> None:
    """Start (with Python stacks) or stop the allocator's history on this process's CUDA device."""
    import torch
    if enabled:
        torch.cuda.memory._record_memory_history(max_entries=500_000, stacks="python")
    else:
        torch.cuda.memory._record_memory_history(enabled=None)


def device_events() -> list[dict]:
    import torch
    traces = torch.cuda.memory._snapshot()["device_traces"]
    return traces[torch.cuda.current_device()] if traces else []
