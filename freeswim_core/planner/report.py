"""What one sampling run did, as plain JSON: the run's log line, the UI and the tests read it."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional


@dataclass
class RunReport:
    """What one sampling run did (all fields JSON-serialisable)."""

    run: int = 0                                         # sequence number in this process
    prompt_id: Optional[str] = None
    node_id: Optional[str] = None
    grids: list = field(default_factory=list)           # [t, h, w] token grids seen
    window: Optional[list] = None                        # [h, w] tokens
    backends: list = field(default_factory=list)        # window backends actually used
    backends_passed_over: dict = field(default_factory=dict)   # faster backends auto did not take: why
    model_calls: int = 0
    windowed_calls: int = 0
    dual_calls: int = 0                                  # full branch run, no cache
    guide_calls: int = 0
    reuse_calls: int = 0
    execution: Optional[str] = None                      # batched | sequential
    handoff_peak_bytes: int = 0                          # largest cross-attention hand-off held at once
    host_grid_confirmed: bool = False                    # the host's grid_sizes matched FreeSwim's grid
    cache_bytes: int = 0
    cache_storage: Optional[str] = None
    cache_precision: Optional[str] = None
    cache_prefetch: bool = False                         # host-stored blocks uploaded ahead of their read
    cache_off_reason: Optional[str] = None
    attention_seconds: float = 0.0                       # in window attention (host clock)
    sequence_shards: int = 1                             # ranks sharing each call's tokens (Ulysses)
    unreached_blocks: list = field(default_factory=list)  # blocks whose self-attention never reached FreeSwim
    memory: Optional[dict] = None                        # the memory plan of the run's calls (freeswim_core.memory)
    warnings: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)
