"""What the running ComfyUI tells a Wan model's attention calls about where they are.

Current ComfyUI (0.5 and later) sets ``transformer_options["block_index"]`` before
each block and ``["grid_sizes"]`` (the latent's token grid after patch embedding)
before the first; 0.3.x sets neither. FreeSwim uses them when the model's own
forward sets them: the block index places every attention call without looking at
its shape (so a grid whose token count equals the text length can be windowed),
and the host's grid confirms the one FreeSwim derived from the latent.

The check reads the string constants of the model class's ``forward_orig``: the
keys the host's own code writes, not a version number that forks and backports
would make wrong.
"""
from __future__ import annotations

BLOCK_INDEX = "block_index"
GRID_SIZES = "grid_sizes"

_constants: dict[type, frozenset] = {}   # per model class (a plain dict: torch.compile traces it)


def _forward_constants(cls) -> frozenset:
    found = _constants.get(cls)
    if found is None:
        code = getattr(getattr(cls, "forward_orig", None), "__code__", None)
        found = frozenset(c for c in (code.co_consts if code is not None else ()) if isinstance(c, str))
        _constants[cls] = found
    return found


def sets_block_index(dm) -> bool:
    """Does this model's forward set ``transformer_options["block_index"]`` for each block?"""
    return BLOCK_INDEX in _forward_constants(type(dm))


def sets_grid_sizes(dm) -> bool:
    """Does this model's forward set ``transformer_options["grid_sizes"]``?"""
    return GRID_SIZES in _forward_constants(type(dm))
