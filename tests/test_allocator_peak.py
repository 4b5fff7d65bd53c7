"""Replaying an allocator history: the peak and who holds it, worked by hand."""
from harness.allocator_peak import peak_sites


def _f(path, line, name):
    return {"filename": path, "line": line, "name": name}


TORCH = _f("/x/site-packages/torch/nn/functional.py", 10, "linear")
PACK = _f("/repo/freeswim_core/attention/flex.py", 188, "to_inner")
COMFY = _f("/h/ComfyUI/comfy/ldm/wan/model.py", 90, "forward")


def test_peak_and_the_code_holding_it():
    """alloc a 100 (comfy, under a torch frame), b 50 (pack), free a, c 120 (pack), d 30 (comfy):
    live totals 100, 150, 50, 170, 200 -> the peak is 200, held by the pack (50 + 120) and
    ComfyUI (30); the earlier 150 with "a" live is not the peak."""
    events = [
        {"action": "alloc", "addr": 1, "size": 100, "frames": [TORCH, COMFY]},
        {"action": "alloc", "addr": 2, "size": 50, "frames": [PACK]},
        {"action": "free_requested", "addr": 1, "size": 100},
        {"action": "free_completed", "addr": 1, "size": 100},
        {"action": "alloc", "addr": 3, "size": 120, "frames": [TORCH, PACK]},
        {"action": "alloc", "addr": 4, "size": 30, "frames": [COMFY]},
        {"action": "free_completed", "addr": 3, "size": 120},
    ]
    peak, sites = peak_sites(events)
    assert peak == 200
    assert sites == [("freeswim_core/attention/flex.py:188 to_inner", 170), ("ldm/wan/model.py:90 forward", 30)]


def test_free_requested_counts_where_the_trace_has_no_completions_and_small_sites_fold():
    events = [{"action": "alloc", "addr": i, "size": 10 + i, "frames": [_f(f"/r/m{i}.py", i, "f")]}
              for i in range(4)]
    events += [{"action": "free_requested", "addr": 0, "size": 10},
               {"action": "alloc", "addr": 9, "size": 5, "frames": []}]
    peak, sites = peak_sites(events, top=2)
    assert peak == 10 + 11 + 12 + 13                     # before the free; 11 + 12 + 13 + 5 after
    assert sites == [("r/m3.py:3 f", 13), ("r/m2.py:2 f", 12), ("other", 21)]
