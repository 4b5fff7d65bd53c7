"""One released checkpoint of a model family, as the registry describes it."""
from __future__ import annotations

from dataclasses import dataclass, field

# What a variant can be used with: the three model patches and the refine.
FEATURES = ("window", "dual", "cache", "refine")


@dataclass(frozen=True)
class Variant:
    """A checkpoint: ``name`` is the one the plan route and the panel use, ``short`` the
    benchmarks' (``--model 1.3b``). ``arch`` is its family's architecture object (the memory
    planner's interface: ``weights_bytes``, ``latent_shape``, ``token_grid``, ``native_window``,
    sizes). ``files``: lower-case pieces that a checkpoint's file name contains (all of them), and
    ``not_files`` pieces it does not, for the panel to tell which variant a loader holds.
    ``experts``: models sampled as two experts of this architecture (Wan2.2 A14B)."""

    name: str
    short: str
    family: str
    label: str
    arch: object
    files: tuple = ()
    not_files: tuple = ()
    experts: int = 1
    features: frozenset = field(default_factory=lambda: frozenset(FEATURES))

    def matches_file(self, filename: str) -> bool:
        n = filename.lower()
        return bool(self.files) and all(p in n for p in self.files) and not any(p in n for p in self.not_files)

