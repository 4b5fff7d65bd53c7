"""Whether the running ComfyUI tells a Wan model's blocks the token grid.

Current ComfyUI (0.5 and later) sets ``transformer_options["grid_sizes"]`` (the
latent's token grid after patch embedding) before the first block; 0.3.x does
not. Where the model's own forward sets it, FreeSwim confirms the grid it derived
from the latent against it before windowing anything. (Blocks themselves are
identified by FreeSwim's block replacement, on every host.)

The check reads the string constants of the model class's ``forward_orig``: the
key the host's own code writes, not a version number that forks and backports
would make wrong.
"""
from __future__ import annotations

GRID_SIZES = "grid_sizes"

_constants: dict[type, frozenset] = {}   # per model class (a plain dict: torch.compile traces it)


def _forward_constants(cls) -> frozenset:
    found = _constants.get(cls)
    if found is None:
        code = getattr(getattr(cls, "forward_orig", None), "__code__", None)
        found = frozenset(c for c in (code.co_consts if code is not None else ()) if isinstance(c, str))
        _constants[cls] = found
    return found


def sets_grid_sizes(dm) -> bool:
    """Does this model's forward set ``transformer_options["grid_sizes"]``?"""
    return GRID_SIZES in _forward_constants(type(dm))
