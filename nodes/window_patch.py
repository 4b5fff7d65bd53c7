"""FreeSwim Window Attention Patch: inward sliding-window self-attention for Wan and LTX-Video."""
from __future__ import annotations

from comfy_api.latest import io

from ..freeswim_core import BACKENDS, SCALE_MODES
from ..freeswim_core.settings import WindowOptions
from ..freeswim_core.native import NATIVE_SIZE_OPTIONS
from .checks import check_choice, check_number
from .errors import InvalidInput
from .families import model_info
from .hooks import install
from .options import WINDOW_NODE as NODE_NAME
from .options import WindowSettings

_DEFAULT = WindowOptions()


class FreeSwimWindowAttentionPatch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FreeSwimWindowAttentionPatch",
            display_name=NODE_NAME,
            category="FreeSwim",
            description=(
                "Sample a Wan or LTX-Video model above its native size without repetition: every video "
                "token attends to all frames but only to keys inside a spatial window the size of "
                "the model's native token grid, shifted inward at the borders (FreeSwim). "
                "No effect when the video is not larger than the native size."),
            inputs=[
                io.Model.Input("model", tooltip="A Wan 2.1 / 2.2 model (T2V, I2V, FLF, VACE, Fun, A14B, 5B) "
                                                "or an LTX-Video 0.9.x model (2B, 13B)."),
                io.Combo.Input("native_size", options=NATIVE_SIZE_OPTIONS, default=_DEFAULT.native_size,
                               tooltip="Native resolution (width x height) the model was trained at; sets "
                                       "the window. auto: Wan 1.3B 832x480, 14B 1280x720, TI2V-5B 1280x704, "
                                       "LTX-Video 2B 768x512, 13B 1216x704; turned portrait for portrait videos."),
                io.Int.Input("custom_width", default=_DEFAULT.custom_width, min=16, max=8192, step=16,
                             tooltip="Native width in pixels when native_size is custom."),
                io.Int.Input("custom_height", default=_DEFAULT.custom_height, min=16, max=8192, step=16,
                             tooltip="Native height in pixels when native_size is custom."),
                io.Boolean.Input("inward", default=_DEFAULT.inward,
                                 tooltip="Shift windows inward at the borders so every token keeps a "
                                         "full window (paper). Off: truncate them (ablation)."),
                io.Combo.Input("attention_scale", options=list(SCALE_MODES), default=_DEFAULT.scale_mode,
                               tooltip="Softmax scale of self-attention. reference: the official "
                                       "sqrt(log 3120 / log 1560 / d) (LTX-Video: the same formula with its "
                                       "released native frame's tokens); native: the formula with the chosen "
                                       "native grid; none: 1/sqrt(d)."),
                io.Combo.Input("backend", options=list(BACKENDS), default=_DEFAULT.backend,
                               tooltip="auto: NATTEN's fused kernels where NATTEN's compiled wheel is "
                                       "installed, else FlexAttention on CUDA (compiled, block-sparse), else "
                                       "exact chunked attention; the run report says which ran and why. natten: "
                                       "NATTEN's neighborhood attention (inward windows only)."),
            ],
            outputs=[io.Model.Output(tooltip="The model with window attention; the input model is unchanged.")],
        )

    @classmethod
    def execute(cls, model, native_size, custom_width, custom_height, inward, attention_scale,
                backend) -> io.NodeOutput:
        info = model_info(model, NODE_NAME)
        check_choice(NODE_NAME, "native_size", native_size, NATIVE_SIZE_OPTIONS)
        check_choice(NODE_NAME, "attention_scale", attention_scale, SCALE_MODES)
        check_choice(NODE_NAME, "backend", backend, BACKENDS)
        if backend == "natten" and not inward:
            raise InvalidInput(f"{NODE_NAME}: backend natten runs inward windows only (neighborhood attention "
                               f"shifts windows inward at borders); turn inward on, or choose auto or chunked "
                               f"for the no-inward ablation.")
        custom_width = check_number(NODE_NAME, "custom_width", custom_width, minimum=1, integer=True)
        custom_height = check_number(NODE_NAME, "custom_height", custom_height, minimum=1, integer=True)
        if native_size == "custom" and min(custom_width, custom_height) < info.px_per_token:
            raise InvalidInput(f"{NODE_NAME}: custom native size {custom_width}x{custom_height} is smaller "
                             f"than one token ({info.px_per_token} px); use at least "
                             f"{info.px_per_token} px per side.")
        settings = WindowSettings(info=info, native_size=native_size,
                                          custom_width=int(custom_width),
                                          custom_height=int(custom_height), inward=bool(inward),
                                          scale_mode=attention_scale, backend=backend)
        m = model.clone()
        install(m, NODE_NAME, window=settings)
        return io.NodeOutput(m)
