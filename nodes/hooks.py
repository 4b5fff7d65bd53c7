"""How FreeSwim plugs into ComfyUI: the override slot, two wrappers, a block replacement.

* ``install`` merges a node's settings into the model's FreeSwim options, puts
  :func:`freeswim_attention_override` in the override slot (keeping the one that
  was there), adds the wrappers and a block replacement on every transformer block
  (keeping any replacement another node set there first).
* The OUTER_SAMPLE wrapper owns a sampling run: it checks the chain of nodes,
  finds out whether another node took the override slot after FreeSwim, creates
  the run's state and drops it in ``finally``, publishing the run report.
* The DIFFUSION_MODEL wrapper has the run's planner (``freeswim_core.planner``) plan
  each model call once and appends the full-attention twin rows; they are cut off
  the output.
* The block replacement runs each block: in one go (batched), or the twins first
  and then the caller's rows with the twins' cross-attention handed over
  (sequential), so at most one block's hand-off exists at a time.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import replace
from typing import Optional

import comfy.model_patcher
import torch
from comfy.patcher_extension import WrappersMP

from ..freeswim_core import probes
from ..freeswim_core.planner import CallPlan, Run
from .errors import InvalidInput
from .families import diffusion_model_of, family_named, family_of
from .multigpu import install_clone_callbacks
from .options import (CACHE_NODE, CURSOR_KEY, DUAL_NODE, LATER_KEY, OPTIONS_KEY, OVERRIDE_SLOT, PLAN_KEY, RUN_KEY,
                      SCOPE_KEY, WINDOW_NODE, WRAPPER_KEY, FreeSwimOptions, options_of)
from .override import BlockScope, CallCursor, freeswim_attention_override, writable_in_place
from .planning import call_facts, new_run, ready
from .run_state import publish


class BlockReplacement:
    """``patches_replace["dit"][("double_block", i)]``: FreeSwim's run of block ``i``, calling the
    host's original block (or a replacement another node set before FreeSwim's)."""

    def __init__(self, index: int, inner=None):
        self.index, self.inner = index, inner

    def __call__(self, args: dict, extra: dict) -> dict:
        to = args.get("transformer_options")
        plan: Optional[CallPlan] = to.get(PLAN_KEY) if isinstance(to, dict) else None

        def run_block(a):
            return self.inner(a, extra) if self.inner is not None else extra["original_block"](a)

        if plan is None or plan.window is None:
            return run_block(args)
        cursor = to.get(CURSOR_KEY)
        if cursor is not None:
            cursor.ran.add(self.index)
        if not (plan.twins and plan.execution == "sequential"):
            return run_block({**args, "transformer_options": {**to, SCOPE_KEY: BlockScope(self.index)}})
        rows, total = plan.layout.rows, plan.layout.total_rows
        x = args["img"]
        # Each half's input is dead once that half has run; where only FreeSwim and the host's own
        # loop hold the block's input, its output goes into the input's memory (no third copy of
        # the hidden states beside the twins' output and the window rows' attention).
        in_place = self.inner is None and plan.model.frees_block_inputs and writable_in_place(x)
        twins = BlockScope(self.index, "twins")
        twin_out = run_block(_block_rows(args, total, slice(rows, total), {**to, SCOPE_KEY: twins}))["img"]
        if in_place:
            x[rows:] = twin_out
            twin_out = None
        window = BlockScope(self.index, "window", handoff=twins.handoff)
        out = run_block(_block_rows(args, total, slice(0, rows), {**to, SCOPE_KEY: window}))
        if not in_place:
            return {**out, "img": torch.cat([out["img"], twin_out])}
        x[:rows] = out["img"]
        return {**out, "img": x}


def _batch_sized(v, rows: int) -> bool:
    """Is ``v`` a per-row tensor of a batch of ``rows`` (as opposed to shared data: RoPE tables)?"""
    return isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == rows


def _rows_of(v, total: int, rows: slice):
    """``v`` for some rows: a per-row tensor sliced, a tuple or list of them (LTX's RoPE ``pe`` on
    ComfyUI 0.33 is ``(per-row table, flag)``) sliced element by element, anything else shared."""
    if _batch_sized(v, total):
        return v[rows]
    if isinstance(v, (tuple, list)):
        return type(v)(_rows_of(x, total, rows) for x in v)
    return v


def _block_rows(args: dict, total: int, rows: slice, to: dict) -> dict:
    """The block's arguments for a contiguous range of rows (no copies: slices)."""
    out = {k: _rows_of(v, total, rows) for k, v in args.items()}
    out["transformer_options"] = to
    return out


def install(model, node_name: str, **changes) -> None:
    """Merge ``changes`` into the FreeSwim options of a (cloned) ModelPatcher and hook it; a model
    no family knows is refused naming ``node_name``."""
    family = family_of(model, node_name)
    to = model.model_options.setdefault("transformer_options", {})
    opts: FreeSwimOptions = options_of(to) or FreeSwimOptions()
    current = to.get(OVERRIDE_SLOT)
    inner = opts.inner_override if current is freeswim_attention_override else current
    dm = diffusion_model_of(model)
    blocks = family.blocks(dm)
    to[OPTIONS_KEY] = replace(opts, inner_override=inner, blocks=blocks, family=family.name, **changes)
    to[OVERRIDE_SLOT] = freeswim_attention_override
    for kind, fn in ((WrappersMP.DIFFUSION_MODEL, functools.partial(diffusion_model_wrapper, family)),
                     (WrappersMP.OUTER_SAMPLE, outer_sample_wrapper)):
        model.remove_wrappers_with_key(kind, WRAPPER_KEY)
        model.add_wrapper_with_key(kind, WRAPPER_KEY, fn)
    family.install(model, dm)
    install_clone_callbacks(model, WRAPPER_KEY)
    group, block = family.replace_key
    replacements = to.get("patches_replace", {}).get(group, {})
    for i in range(blocks):
        existing = replacements.get((block, i))
        if not isinstance(existing, BlockReplacement):
            model.set_model_patch_replace(BlockReplacement(i, existing), group, block, i)


def _check_chain(opts: FreeSwimOptions) -> None:
    """The nodes apply in any order, so only at sampling time is the chain known."""
    if opts.cache is not None and opts.dual is None:
        raise InvalidInput(f"{CACHE_NODE}: this model has no {DUAL_NODE}, so there are no full-branch "
                           f"features to cache. Add {DUAL_NODE} to the model (before or after this node), "
                           f"or remove {CACHE_NODE}.")
    if opts.dual is not None and opts.window is None:
        raise InvalidInput(f"{DUAL_NODE}: this model has no {WINDOW_NODE}, so the full-attention branch "
                           f"has nothing to correct. Add {WINDOW_NODE} to the model (before or after "
                           f"this node), or remove {DUAL_NODE}.")


def _name(fn) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def _uncond_runs(guider) -> bool:
    """Whether the run evaluates an unconditional pass: not where ComfyUI's own CFG sampling
    function skips it (cfg 1 without ``disable_cfg1_optimization``; a guider with no negative
    conditioning, as BasicGuider). Any other guider is assumed to run both."""
    import math

    from comfy.samplers import CFGGuider
    if not isinstance(guider, CFGGuider) or type(guider).predict_noise is not CFGGuider.predict_noise:
        return True
    if "negative" not in getattr(guider, "original_conds", {"negative": None}):
        return False
    cfg1 = math.isclose(float(getattr(guider, "cfg", 0.0)), 1.0)
    return not (cfg1 and not guider.model_options.get("disable_cfg1_optimization", False))


def _start_run(guider, to: dict, opts: FreeSwimOptions) -> Run:
    run = new_run()
    _check_chain(opts)
    slot = to.get(OVERRIDE_SLOT)
    if slot is not freeswim_attention_override:
        if not callable(slot):
            run.bypass = True
            run.say("override-lost", logging.WARNING,
                    "%s: another node put %r in the attention override slot after FreeSwim, which is not an "
                    "attention function, so FreeSwim is off for this run. Remove that node.", WINDOW_NODE, slot)
            return run
        # an override set after FreeSwim's: this run composes them as if it had been set before
        to[OVERRIDE_SLOT], to[LATER_KEY] = freeswim_attention_override, slot
        run.say("override-later", logging.INFO,
                "%s: %s was set after FreeSwim; FreeSwim handles the window rows and the dual path and hands "
                "every other attention call to it, as if it had been set before.", WINDOW_NODE, _name(slot))
    group, block = family_named(opts.family).replace_key
    ours = to.get("patches_replace", {}).get(group, {})
    lost = [i for i in range(opts.blocks) if not isinstance(ours.get((block, i)), BlockReplacement)]
    if lost:
        run.say("blocks-lost", logging.WARNING,
                "%s: another node replaced FreeSwim's run of blocks %s; their attention calls are placed by "
                "shape, and their dual path runs batched.", WINDOW_NODE, lost)
    if opts.dual is not None:
        run.uncond_runs = _uncond_runs(guider)
        sampling = guider.model_patcher.get_model_object("model_sampling")
        run.sigma_start = float(sampling.percent_to_sigma(opts.dual.start_percent))
        run.sigma_end = float(sampling.percent_to_sigma(opts.dual.end_percent))
        run.report.execution = opts.dual.execution
    try:
        from comfy_execution.utils import get_executing_context
        ctx = get_executing_context()
    except ImportError:
        ctx = None
    if ctx is not None:
        run.report.prompt_id, run.report.node_id = ctx.prompt_id, ctx.node_id
    return run


def outer_sample_wrapper(executor, *args, **kwargs):
    guider = executor.class_obj
    orig = guider.model_options
    guider.model_options = comfy.model_patcher.create_model_options_clone(orig)
    to = guider.model_options.setdefault("transformer_options", {})
    opts = options_of(to)
    run = None
    try:
        if opts is not None:
            run = _start_run(guider, to, opts)
            to[RUN_KEY] = run
        return executor(*args, **kwargs)
    finally:
        guider.model_options = orig
        if run is not None:
            publish(run.close())


def _with_transformer_options(args, kwargs, to, at: int):
    if "transformer_options" in kwargs or len(args) <= at:
        return args, {**kwargs, "transformer_options": to}
    args = list(args)
    args[at] = to
    return tuple(args), kwargs


def _map_batch(args, kwargs, rows: int, fn, at: int):
    """Apply ``fn`` to every batch-sized (``rows``) tensor argument of the model call."""
    def one(v):
        return fn(v) if _batch_sized(v, rows) else v
    args = tuple(one(a) if i != at else a for i, a in enumerate(args))
    kwargs = {k: (v if k == "transformer_options" else one(v)) for k, v in kwargs.items()}
    return args, kwargs


def _patched_attention(dm, blocks: list) -> str:
    """Names what another node set on these blocks' attention modules (a ``forward`` object patch,
    as a pack replacing the attention code sets it), or "" when nothing shows."""
    found = set()
    for name, module in dm.named_modules():
        parts = name.split(".")
        if len(parts) < 3 or not parts[1].isdigit() or int(parts[1]) not in blocks:
            continue
        fn = module.__dict__.get("forward")
        if fn is not None and "attn" in parts[-1]:
            found.add(f"{parts[0]}.N.{'.'.join(parts[2:])}.forward = {_name(fn)}")
    if not found:
        return ""
    return (f"Another node set {'; '.join(sorted(found))} on this model: remove it from this model's chain, or "
            f"FreeSwim stays off in those blocks.")


def diffusion_model_wrapper(family, executor, *args, **kwargs):
    """The DIFFUSION_MODEL wrapper of a model of ``family`` (bound at install)."""
    at = family.transformer_options_arg
    to = kwargs.get("transformer_options", args[at] if len(args) > at else None)
    opts = options_of(to)
    run: Optional[Run] = to.get(RUN_KEY) if opts is not None else None
    if opts is None or (run is not None and run.bypass):
        return executor(*args, **kwargs)
    dm = executor.class_obj
    if run is None:                      # a model call outside a sampling run: planned alone, no cache
        run = new_run()
        run.cache_allowed, run.once_per_process = False, True
    ready(run, opts, family, dm)
    inputs = family.call_inputs(dm, args, kwargs)
    if inputs.skip is not None:
        run.say(f"skip:{inputs.skip}", logging.WARNING, "%s: %s; FreeSwim leaves such calls alone (full attention, "
                "no dual path).", WINDOW_NODE, inputs.skip)
        return executor(*args, **kwargs)
    plan: CallPlan = run.plan_call(call_facts(run, inputs, to))
    cursor = CallCursor()
    args, kwargs = _with_transformer_options(args, kwargs, {**to, RUN_KEY: run, PLAN_KEY: plan,
                                                            CURSOR_KEY: cursor}, at)
    if plan.twins:
        args, kwargs = _map_batch(args, kwargs, plan.layout.rows, plan.layout.expand, at)
    out = executor(*args, **kwargs)
    if not cursor.disabled:              # (a call FreeSwim stepped aside from has said so already)
        run.finish_call(plan, cursor.ran, cursor.reached, functools.partial(_patched_attention, dm))
    if not plan.twins:
        return out
    probes.output(plan, out)
    return out[:plan.layout.rows]
