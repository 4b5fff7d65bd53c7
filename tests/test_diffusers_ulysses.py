"""The diffusers adapter under Ulysses context parallelism: two gloo processes on the CPU.

Each spawned rank runs the same guided steps (window attention, the dual path, the cache
guiding and reusing) on its share of the tokens (``harness/ulysses_run.py``); the reference
is the same steps in this process, with no parallelism. FreeSwim's token exchange is also
checked against plain slicing on a token count the two ranks split unevenly.
"""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
if not torch.distributed.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from harness.ulysses_run import CASES, scenario, single, tiny_transformer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORLD = 2


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Each rank's results (the CASES' outputs and reports, the exchange check, the refusals)."""
    out = tmp_path_factory.mktemp("ulysses") / "result"
    proc = subprocess.run([sys.executable, "-m", "harness.ulysses_run", "--world", str(WORLD), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [torch.load(f"{out}.rank{r}", weights_only=False) for r in range(WORLD)]


@pytest.mark.parametrize("case", list(CASES))
def test_every_rank_gives_the_single_process_output(ranks, case):
    expected, report = single(case)
    for rank in ranks:
        got, got_report = rank[case]
        assert got.shape == expected.shape
        assert (got - expected).abs().max().item() < 1e-5
        # the same plan: guide and reuse calls as in one process
        for key in ("model_calls", "windowed_calls", "guide_calls", "reuse_calls", "window", "grids"):
            assert got_report[key] == report[key], key
        assert got_report["sequence_shards"] == WORLD and report["sequence_shards"] == 1
        assert not got_report["warnings"]
    assert report["guide_calls"] > 0 and report["reuse_calls"] > 0
    # each rank stored its own tokens' features: together, the single process's cache
    assert sum(rank[case][1]["cache_bytes"] for rank in ranks) == report["cache_bytes"] > 0


def test_ranks_agree_to_run_without_the_cache_where_one_has_no_room(ranks):
    """The last rank has no host RAM for the features: every rank plans without the cache (else
    their exchanges would carry different rows), and gets the no-cache single-process output."""
    expected, _ = single("even", cache=False)
    for rank in ranks:
        got, report = rank["short"]
        assert report["cache_off_reason"] and report["guide_calls"] == report["reuse_calls"] == 0
        assert report["dual_calls"] > 0
        assert (got - expected).abs().max().item() < 1e-5


def test_the_reference_is_freeswim_not_the_plain_model():
    """The scenario's output depends on FreeSwim (so equal outputs above say something)."""
    latent, _, _, together = CASES["even"]
    with_freeswim, _ = single("even")
    plain = scenario(tiny_transformer(), latent, together)
    assert (with_freeswim - plain).abs().max().item() > 1e-2


def test_the_token_exchange_on_an_uneven_split(ranks):
    """351 tokens over two ranks (176 + 175): every token of the rank's heads, and back."""
    for r, rank in enumerate(ranks):
        ex = rank["exchange"]
        assert ex["gather"] == 0.0 and ex["scatter"] == 0.0
        assert ex["shapes"] == [[3, 351, 32], [3, 176 - r, 64]]


def test_unsupported_parallel_setups_are_refused_clearly(ranks):
    for rank in ranks:
        ring, heads = rank["refusals"]["ring"], rank["refusals"]["heads"]
        assert "ring_degree 2 is not supported" in ring and "ulysses_degree=N" in ring
        assert "does not divide the model's 3 attention heads" in heads and "Use one of 3" in heads
