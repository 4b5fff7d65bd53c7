"""Dual-Path Override and Cross-Attn Cache nodes."""
from __future__ import annotations

from comfy_api.latest import io

from ..freeswim_core.dual import PASSES, PRECISIONS, STORAGE_MODES
from .checks import check_choice, check_number
from .errors import InvalidInput, UnsupportedModel
from .families import diffusion_model_of, family_of
from .hooks import install
from .options import CACHE_NODE as CACHE_NAME
from .options import DUAL_NODE as DUAL_NAME
from .options import CacheSettings, DualPathSettings

_DUAL, _CACHE = DualPathSettings(), CacheSettings()

EXECUTIONS = ("auto", "batched", "sequential")


def _check_dual_model(model, node_name: str):
    refusal = family_of(model, node_name).dual_path_refusal(diffusion_model_of(model))
    if refusal is not None:
        raise UnsupportedModel(f"{node_name}: {refusal}")


class FreeSwimDualPathOverride(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FreeSwimDualPathOverride",
            display_name=DUAL_NAME,
            category="FreeSwim",
            description=(
                "FreeSwim's dual path: the conditional pass also runs a full-attention branch from the "
                "same latent, and in every block its text cross-attention output replaces the window "
                "branch's, restoring global coherence that window attention alone loses. Needs "
                "FreeSwim Window Attention Patch on the same model (either order)."),
            inputs=[
                io.Model.Input("model"),
                io.Combo.Input("passes", options=list(PASSES), default=_DUAL.passes,
                               tooltip="cond: only the conditional pass gets the full branch (the "
                                       "reference's cache variant). cond_and_uncond: both passes (the "
                                       "reference's no-cache variant)."),
                io.Boolean.Input("override_image_cross", default=_DUAL.override_image_cross,
                                 tooltip="I2V/FLF models: also replace the CLIP image cross-attention "
                                         "(the reference replaces only the text cross-attention)."),
                io.Float.Input("start_percent", default=_DUAL.start_percent, min=0.0, max=1.0, step=0.01,
                               tooltip="Part of the schedule where the dual path runs: start."),
                io.Float.Input("end_percent", default=_DUAL.end_percent, min=0.0, max=1.0, step=0.01,
                               tooltip="Part of the schedule where the dual path runs: end."),
                io.Combo.Input("execution", options=list(EXECUTIONS), default=_DUAL.execution,
                               tooltip="batched: in every block the full-attention rows run in the same "
                                       "batch as the window rows. sequential: in every block the full-"
                                       "attention rows run first and hand their cross-attention output "
                                       "to the window rows: the same result, with each block's "
                                       "activations for half the rows at a time (for 4K). auto: "
                                       "batched where FreeSwim's memory plan of the call fits the GPU's "
                                       "free memory, else sequential."),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, passes, override_image_cross, start_percent, end_percent,
                execution="auto") -> io.NodeOutput:
        _check_dual_model(model, DUAL_NAME)
        check_choice(DUAL_NAME, "passes", passes, PASSES)
        check_choice(DUAL_NAME, "execution", execution, EXECUTIONS)
        start_percent = check_number(DUAL_NAME, "start_percent", start_percent, minimum=0.0, maximum=1.0)
        end_percent = check_number(DUAL_NAME, "end_percent", end_percent, minimum=0.0, maximum=1.0)
        if not start_percent < end_percent:
            raise InvalidInput(f"{DUAL_NAME}: start_percent ({start_percent}) must be below end_percent "
                             f"({end_percent}), both between 0 and 1.")
        m = model.clone()
        install(m, DUAL_NAME, dual=DualPathSettings(
            passes=passes, override_image_cross=bool(override_image_cross),
            start_percent=float(start_percent), end_percent=float(end_percent), execution=execution))
        return io.NodeOutput(m)


class FreeSwimCrossAttnCache(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FreeSwimCrossAttnCache",
            display_name=CACHE_NAME,
            category="FreeSwim",
            description=(
                "Runs the dual path's full-attention branch only on guide steps and reuses its "
                "per-block cross-attention features on the others (FreeSwim's feature reuse, about "
                "2x faster). Needs FreeSwim Dual-Path Override on the same model (either order)."),
            inputs=[
                io.Model.Input("model"),
                io.Int.Input("guide_interval", default=_CACHE.interval, min=1, max=100,
                             tooltip="Run the full branch every N scheduled steps (reference: 2)."),
                io.Combo.Input("storage", options=list(STORAGE_MODES), default=_CACHE.storage,
                               tooltip="auto: GPU if the features fit with room to spare, else pinned "
                                       "CPU memory streamed back per block, else no cache (logged)."),
                io.Combo.Input("precision", options=list(PRECISIONS), default=_CACHE.precision,
                               tooltip="Stored precision: the model's, bf16, or fp8 (e4m3 with a "
                                       "per-token scale; a quarter of fp32)."),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, guide_interval, storage, precision) -> io.NodeOutput:
        _check_dual_model(model, CACHE_NAME)
        check_choice(CACHE_NAME, "storage", storage, STORAGE_MODES)
        check_choice(CACHE_NAME, "precision", precision, PRECISIONS)
        guide_interval = check_number(CACHE_NAME, "guide_interval", guide_interval, minimum=1, integer=True)
        m = model.clone()
        install(m, CACHE_NAME, cache=CacheSettings(interval=int(guide_interval), storage=storage,
                                                        precision=precision))
        return io.NodeOutput(m)
