"""Dual path and cross-attention cache, host-agnostic.

FreeSwim's conditional pass runs two rows from one latent: a WINDOW row (window
self-attention) and a FULL row (ordinary full self-attention). In every block the
text cross-attention output computed from the FULL row's queries replaces the
WINDOW row's own. Only the window row's prediction is kept; the full row is
rebuilt from the window latent at every call, so it has no trajectory of its own.

With the cache, the full row runs only on *guide* calls; its per-block
cross-attention outputs (before the output projection) are stored and reused by
the window row on *reuse* calls, where neither the full row nor the text
cross-attention of that row is computed.

One module a job: ``rows`` (which rows get a full-attention twin), ``policy``
(guide or reuse, from the run's schedule), ``storage`` (cache sizes and where
they fit), ``store`` (the per-run feature store). A host describes a model call as
row kinds, row keys and a sigma, and gets back a layout and a decision.
"""
from .policy import (CacheAction, cache_action_for_call, decide_cache_action, dual_active, dual_sigma_range,
                     flow_sigma_at_percent, is_guide_step, step_index)
from .rows import PASSES, DualLayout, row_keys, row_kinds, twin_rows
from .storage import (PRECISIONS, STORAGE_MODES, cache_bytes, cached_rows, choose_storage, element_bytes,
                      host_cache_bytes, pinned_bytes, plan_store, prefetch_fits)
from .store import FeatureStore

__all__ = ["PASSES", "PRECISIONS", "STORAGE_MODES", "CacheAction", "DualLayout", "FeatureStore",
           "cache_action_for_call", "cache_bytes", "cached_rows", "choose_storage", "decide_cache_action",
           "dual_active", "dual_sigma_range", "element_bytes", "flow_sigma_at_percent", "host_cache_bytes",
           "is_guide_step", "pinned_bytes", "plan_store", "prefetch_fits", "row_keys", "row_kinds",
           "step_index", "twin_rows"]
