"""The per-rank memory plan of the diffusers adapter under Ulysses, against a trace of diffusers'
real WanTransformer3DModel at real sizes (fake tensors on a fake process group: nothing is
allocated, no collective moves data; harness/ulysses_memory.py)."""
import pytest
import torch

pytest.importorskip("diffusers")
if not torch.distributed.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from freeswim_core.families import variant  # noqa: E402
from freeswim_core.memory.ulysses import plan_rank  # noqa: E402
from harness.ulysses_memory import trace_rank  # noqa: E402


@pytest.mark.parametrize("model,width,height,mode,degree", [
    ("1.3b", 1920, 1088, "window", 2),
    ("1.3b", 832, 480, "dual", 3),            # the native size: FreeSwim changes nothing, no twin
    ("14b", 3840, 2176, "window", 8),
    ("14b", 3840, 2176, "dual", 4),
])
def test_the_planned_rank_peak_matches_the_trace(model, width, height, mode, degree):
    traced = trace_rank(model, width, height, 81, mode=mode, degree=degree)
    planned = plan_rank(variant(model).arch, width, height, 81, degree=degree, mode=mode)
    assert abs(planned.peak_bytes - traced.peak_bytes) <= 0.01 * traced.peak_bytes
    assert planned.rank_tokens == -(-traced.tokens // degree)


def test_more_ranks_hold_less_but_every_rank_keeps_the_weights_and_the_whole_embedding():
    arch = variant("14b").arch
    peaks = [trace_rank("14b", 3840, 2176, 81, mode="window", degree=n).peak_bytes for n in (2, 4)]
    assert peaks[1] < peaks[0]
    kept = plan_rank(arch, 3840, 2176, 81, degree=4).kept_bytes
    assert peaks[1] > arch.weights_bytes("bf16") + kept


def test_a_degree_that_does_not_divide_the_heads_is_refused():
    with pytest.raises(ValueError, match="does not divide the 40 heads"):
        plan_rank(variant("14b").arch, 3840, 2176, degree=3)


def test_a_rank_with_the_natten_window_keeps_no_block_tables():
    """The tables flex keeps over the whole grid (every rank: 14B at 3840x2176, 21 x 136 x 240 = 685,440
    tokens, 5,355 blocks of 128: 2 x 5,355^2 x 4 + 2 x 5,355 x 4 bytes) are all a natten rank holds less of
    outside its blocks."""
    arch = variant("14b").arch
    flex, natten = (plan_rank(arch, 3840, 2176, 81, degree=4, window_backend=b) for b in ("flex", "natten"))
    assert flex.kept_bytes - natten.kept_bytes == 2 * 5355 ** 2 * 4 + 2 * 5355 * 4
    assert flex.block_bytes == natten.block_bytes
