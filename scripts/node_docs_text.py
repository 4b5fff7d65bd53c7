"""The words of the node help pages and the Chinese locale, in English and Chinese.

``scripts/make_node_docs.py`` joins them with what the nodes themselves declare (inputs,
defaults, tooltips, display names), so a page can never list an input the node does not
have or miss one it has: every input of every node needs an entry in :data:`INPUTS`.
"""
from __future__ import annotations

NODES = ("FreeSwimWindowAttentionPatch", "FreeSwimDualPathOverride", "FreeSwimCrossAttnCache",
         "FreeSwimLatentUpscaleRefine")

DISPLAY_ZH = {
    "FreeSwimWindowAttentionPatch": "FreeSwim 窗口注意力补丁",
    "FreeSwimDualPathOverride": "双路径覆盖",
    "FreeSwimCrossAttnCache": "交叉注意力缓存",
    "FreeSwimLatentUpscaleRefine": "潜空间放大精修",
}

DESCRIPTION_ZH = {
    "FreeSwimWindowAttentionPatch": (
        "让 Wan 或 LTX-Video 模型在高于原生分辨率时采样而不出现重复：每个视频 token 关注所有帧，但只关注一个空间"
        "窗口内的键，窗口大小等于模型原生的 token 网格，在边界处向内平移（FreeSwim）。视频不大于原生尺寸时不起作用。"),
    "FreeSwimDualPathOverride": (
        "FreeSwim 的双路径：条件分支同时从同一潜变量运行一个全注意力分支，在每个块中用它的文本交叉注意力输出"
        "替换窗口分支的输出，恢复仅用窗口注意力时丢失的全局一致性。需要同一模型上的 FreeSwim 窗口注意力补丁（顺序不限）。"),
    "FreeSwimCrossAttnCache": (
        "FreeSwim 的交叉注意力缓存：全注意力分支只在引导步运行，其各块的交叉注意力特征在中间步复用"
        "（约快 2 倍）。需要同一模型上的双路径覆盖（顺序不限）。"),
    "FreeSwimLatentUpscaleRefine": (
        "FreeSwim 的由粗到精阶段：把原生尺寸的视频潜变量放大到目标尺寸，并用（经 FreeSwim 补丁的）模型对调度的"
        "后段重新去噪。参考设置：像素路径、双线性、50 步中强度 0.7、cfg 5、shift 9。"),
}

# Per node input: (Chinese name, Chinese tooltip or None, when to change it: English, Chinese).
INPUTS = {
    "FreeSwimWindowAttentionPatch": {
        "model": ("模型", "Wan 2.1 / 2.2 模型（T2V、I2V、FLF、VACE、Fun、A14B、5B）或 LTX-Video 0.9.x 模型（2B、13B）。",
                  "Connect the loader's MODEL (or another patch node's).",
                  "连接加载器（或其他补丁节点）的 MODEL。"),
        "native_size": ("原生尺寸", "模型训练时的原生分辨率（宽 x 高），决定窗口大小。auto：Wan 1.3B 为 832x480，14B 为 "
                        "1280x720，TI2V-5B 为 1280x704，LTX-Video 2B 为 768x512，13B 为 1216x704；竖屏视频自动转为竖向。",
                        "Keep auto. Pick a preset or custom only for a fine-tune trained at another size.",
                        "保持 auto。只有在模型是以其他尺寸训练的微调模型时，才选择预设或 custom。"),
        "custom_width": ("自定义宽度", "native_size 为 custom 时的原生宽度（像素）。",
                         "Only read when native_size is custom.", "仅在 native_size 为 custom 时使用。"),
        "custom_height": ("自定义高度", "native_size 为 custom 时的原生高度（像素）。",
                          "Only read when native_size is custom.", "仅在 native_size 为 custom 时使用。"),
        "inward": ("向内平移", "在边界处把窗口向内平移，使每个 token 都有完整窗口（论文做法）。关闭：截断窗口（消融实验）。",
                   "Keep on (the paper's method); off is the paper's ablation and shows seams at the borders.",
                   "保持开启（论文方法）；关闭是论文的消融实验，边界处会出现接缝。"),
        "attention_scale": ("注意力缩放", "自注意力的 softmax 缩放。reference：官方的 sqrt(log 3120 / log 1560 / d)"
                            "（LTX-Video：同一公式，用其发布的原生帧的 token 数）；native：用所选原生网格的同一公式；"
                            "none：1/sqrt(d)。",
                            "Keep reference (the official code's); native follows this model's own grid.",
                            "保持 reference（官方代码的设置）；native 使用本模型自己的网格。"),
        "backend": ("后端", "auto：安装了 NATTEN 编译版 wheel 时使用其融合内核，否则在 CUDA 上使用 FlexAttention"
                    "（编译、块稀疏），否则使用精确的分块注意力；运行报告会说明用了哪个以及原因。natten：NATTEN 的"
                    "邻域注意力（仅向内窗口）。",
                    "Keep auto. chunked is exact everywhere and slower on a GPU.",
                    "保持 auto。chunked 在任何设备上都精确，但在 GPU 上较慢。"),
    },
    "FreeSwimDualPathOverride": {
        "model": ("模型", None, "The model with the window patch (before or after this node).",
                  "带有窗口补丁的模型（补丁在本节点之前或之后均可）。"),
        "passes": ("分支", "cond：只有条件分支有全注意力分支（参考代码的缓存变体）。cond_and_uncond：两个分支都有"
                   "（参考代码的无缓存变体）。",
                   "cond with the cache (the reference's cache variant); cond_and_uncond without it.",
                   "使用缓存时选 cond（参考代码的缓存变体）；不使用缓存时选 cond_and_uncond。"),
        "override_image_cross": ("覆盖图像交叉注意力", "I2V/FLF 模型：同时替换 CLIP 图像交叉注意力（参考代码只替换文本交叉注意力）。",
                                 "Leave off unless an I2V result drifts from its start image.",
                                 "保持关闭，除非 I2V 结果偏离起始图像。"),
        "start_percent": ("开始百分比", "双路径运行的调度区间：开始。",
                          "Raise it to skip the dual path on the first, noisiest steps.",
                          "提高它可在最早、噪声最大的几步跳过双路径。"),
        "end_percent": ("结束百分比", "双路径运行的调度区间：结束。",
                        "Lower it to save time on the last steps, where layout is settled.",
                        "降低它可在构图已定的最后几步节省时间。"),
        "execution": ("执行方式", "batched：每个块中全注意力行与窗口行一起运行（最快）。sequential：先运行全注意力行，再运行"
                      "窗口行（显存更少）。auto：能放下时用 batched，否则 sequential。",
                      "Keep auto; the panel shows which one the run will take and why.",
                      "保持 auto；面板会显示本次运行将采用哪一种以及原因。"),
    },
    "FreeSwimCrossAttnCache": {
        "model": ("模型", None, "The model with the dual path (before or after this node).",
                  "带有双路径的模型（双路径在本节点之前或之后均可）。"),
        "guide_interval": ("引导间隔", "每 N 个调度步运行一次全注意力分支（参考值：2）。",
                           "2 is the reference; 3 to 5 is faster with a little less coherence.",
                           "2 为参考值；3 到 5 更快，但一致性略有下降。"),
        "storage": ("存储位置", "auto：特征在 GPU 上放得下且有余量时放 GPU，否则放锁页内存（预取），都放不下时关闭缓存。",
                    "Keep auto; cpu frees GPU memory at 4K at a small cost in speed.",
                    "保持 auto；在 4K 时选 cpu 可释放显存，速度略有损失。"),
        "precision": ("精度", "存储精度：模型精度、bf16 或 fp8（e4m3，按 token 缩放；为 fp32 的四分之一）。",
                      "fp8 halves the cache (4K at 14B); model keeps it exact.",
                      "fp8 可把缓存减半（14B 在 4K 时）；model 保持精确。"),
    },
    "FreeSwimLatentUpscaleRefine": {
        "model": ("模型", "通常已由其他 FreeSwim 节点打补丁。", "The FreeSwim-patched model (the low-noise expert for A14B).",
                  "经 FreeSwim 补丁的模型（A14B 时为低噪声专家）。"),
        "positive": ("正向", None, "The prompt's conditioning, as for KSampler.", "提示词的条件，与 KSampler 相同。"),
        "negative": ("负向", None, "The negative conditioning, as for KSampler.", "负向条件，与 KSampler 相同。"),
        "latent": ("潜变量", "要精修的原生尺寸视频潜变量。", "The native pass's LATENT (a KSampler's output).",
                   "原生尺寸采样的 LATENT（KSampler 的输出）。"),
        "width": ("宽度", "目标宽度（像素，16 的倍数；Wan2.2 TI2V-5B 和 LTX-Video 为 32 的倍数）。",
                  "The output size: 1920x1088 for 1080p, 3840x2176 for 4K.",
                  "输出尺寸：1080p 用 1920x1088，4K 用 3840x2176。"),
        "height": ("高度", "目标高度（像素；用 1088，而不是 1080）。", "Use 1088, not 1080 (a multiple of 16).",
                   "用 1088 而不是 1080（16 的倍数）。"),
        "scale_by": ("缩放倍数", "大于 0 时，目标为输入尺寸乘以该值，忽略宽度和高度。",
                     "Set it (e.g. 2.0) to scale the input instead of typing a size.",
                     "设置它（如 2.0）即可按倍数放大输入，而不必输入尺寸。"),
        "upscale_path": ("放大路径", "pixel：解码、缩放、编码（参考做法；需要 VAE）。latent：直接插值潜变量（无需 VAE，较柔和）。",
                         "Keep pixel (the reference); latent skips the VAE and is softer.",
                         "保持 pixel（参考做法）；latent 跳过 VAE，效果较柔和。"),
        "resize_method": ("缩放方法", "lanczos 仅用于像素路径。", "bilinear is the reference; lanczos is sharper (pixel path).",
                          "bilinear 为参考值；lanczos 更锐利（仅像素路径）。"),
        "strength": ("强度", "重新运行调度的比例（参考 0.7；越低越接近原生结果）。",
                     "Lower (0.5) keeps the native result closer; higher adds detail and may change it.",
                     "较低（0.5）更接近原生结果；较高增加细节，但可能改变画面。"),
        "steps": ("步数", "完整调度的步数；实际运行 round(steps x strength) 步。",
                  "50 is the reference; 30 is faster with little loss.", "50 为参考值；30 更快且损失很小。"),
        "cfg": ("CFG", None, "5 is the reference; 1 skips the negative pass (half the calls).",
                "5 为参考值；1 会跳过负向分支（调用次数减半）。"),
        "sampler_name": ("采样器", None, "As for KSampler; euler is the reference.", "与 KSampler 相同；euler 为参考值。"),
        "scheduler": ("调度器", None, "As for KSampler; simple is the reference.", "与 KSampler 相同；simple 为参考值。"),
        "shift": ("偏移", "精修调度的流偏移（同 ModelSamplingSD3）。0：自动，按模型家族：Wan 为 9.0（参考值），"
                           "LTX-Video 为模型自身的采样（流偏移 10.7，除非上游的 ModelSamplingLTXV 节点另有设置）。",
                  "Keep 0 (auto): Wan's reference 9, LTX-Video's own schedule.",
                  "保持 0（自动）：Wan 用参考值 9，LTX-Video 用其自身的调度。"),
        "seed": ("种子", None, "The noise of the refine; change it for another variation.", "精修所用噪声；修改它可得到另一种变化。"),
        "vae": ("VAE", "像素路径需要它。", "Connect the model's VAE (Wan or LTX-Video) for the pixel path.",
                "像素路径需连接模型的 VAE（Wan 或 LTX-Video）。"),
        "model_high_noise": ("高噪声模型", "Wan2.2 A14B：高噪声专家（与 model 一样经 FreeSwim 补丁）。边界及以上的步由它运行，"
                             "其余由 model（低噪声专家）运行，如同两个串联的 KSamplerAdvanced。",
                             "Wan2.2 A14B only: connect the patched high-noise expert.",
                             "仅用于 Wan2.2 A14B：连接经补丁的高噪声专家。"),
        "boundary": ("边界", "model_high_noise 交给 model 的 sigma。0：自动，使用 Wan2.2 自己的值（T2V 为 0.875，I2V 为 0.9）。",
                     "Keep 0 (Wan2.2's own switch point).", "保持 0（Wan2.2 自己的切换点）。"),
    },
}

OUTPUT_TOOLTIP_ZH = {
    "FreeSwimWindowAttentionPatch": "带窗口注意力的模型；输入模型不变。",
    "FreeSwimLatentUpscaleRefine": "目标尺寸的精修潜变量。",
}

# Page sections: what it does, where it goes, the panel, errors and fixes, a picture.
PAGES = {
    "FreeSwimWindowAttentionPatch": {
        "en": dict(
            what="Wan models are trained at one size (832x480 for 1.3B, 1280x720 for 14B). Sampled larger, their "
                 "attention spreads over more tokens than they ever saw and the picture repeats or falls apart. "
                 "This patch keeps every token's self-attention inside a window the size of the model's native "
                 "frame, across all frames, shifted inward at the borders so every token keeps a full window.",
            where="`Load Diffusion Model -> FreeSwim Window Attention Patch -> (Dual-Path Override -> Cross-Attn "
                  "Cache) -> KSampler or Latent Upscale Refine`. The patches apply in any order.",
            panel="The panel on the node shows the token grid, the window, the share of full attention's work the "
                  "window leaves (about 20% at 1080p for 1.3B) and the planned GPU memory of one model call.",
            errors=[("the connected model is a ..., not a Wan 2.1/2.2 video model",
                     "Connect a Wan model's MODEL output."),
                    ("custom native size ... is smaller than one token", "Use at least 16 px per side (32 for TI2V-5B)."),
                    ("the ... token grid fits inside the native window (log)",
                     "Nothing to do: at or below the native size the patch changes nothing.")],
            picture=("window.png", "One frame's tokens: the window of a token in the middle (blue) and of a token at "
                     "the corner (orange), shifted inward so it keeps its full size; grey: the truncated window of "
                     "the ablation (inward off).")),
        "zh": dict(
            what="Wan 模型在固定尺寸下训练（1.3B 为 832x480，14B 为 1280x720）。以更大尺寸采样时，注意力会分散到模型从未见过的"
                 "更多 token 上，画面会重复或崩坏。本补丁让每个 token 的自注意力保持在一个与模型原生画面同样大小的窗口内，"
                 "覆盖所有帧，并在边界处向内平移，使每个 token 都保有完整窗口。",
            where="`Load Diffusion Model -> FreeSwim 窗口注意力补丁 -> （双路径覆盖 -> 交叉注意力缓存）-> KSampler 或潜空间放大精修`。"
                  "各补丁的顺序不限。",
            panel="节点上的面板显示 token 网格、窗口、窗口相对全注意力保留的计算比例（1.3B 在 1080p 时约 20%），"
                  "以及一次模型调用的预计显存。",
            errors=[("the connected model is a ..., not a Wan 2.1/2.2 video model", "连接 Wan 模型的 MODEL 输出。"),
                    ("custom native size ... is smaller than one token", "每边至少 16 像素（TI2V-5B 为 32）。"),
                    ("the ... token grid fits inside the native window（日志）", "无需处理：在原生尺寸及以下，补丁不改变任何东西。")],
            picture=("window.png", "一帧的 token：中间 token 的窗口（蓝色）与角落 token 的窗口（橙色），后者向内平移以保持完整大小；"
                     "灰色：消融实验（关闭 inward）中被截断的窗口。")),
    },
    "FreeSwimDualPathOverride": {
        "en": dict(
            what="Window attention alone sees only part of the frame, so the layout can drift. The dual path runs a "
                 "second, full-attention copy of the conditional pass from the same latent; in every block its text "
                 "cross-attention output replaces the window row's, which carries the global layout back.",
            where="On the same model as the window patch, before or after it; add Cross-Attn Cache to run the full "
                  "branch only every few steps.",
            panel="The panel shows the execution the run takes (batched or sequential) and the memory of one call "
                  "with the full-attention twin; the last run's line counts the calls that ran the twin.",
            errors=[("this model has no FreeSwim Window Attention Patch", "Add the window patch to the model."),
                    ("start_percent (...) must be below end_percent", "Make start_percent smaller than end_percent."),
                    ("... adds attention layers between a block's self- and cross-attention",
                     "Use the window patch alone with this Wan variant (S2V, HuMo, Animate).")],
            picture=("dual_path.png", "The window row (blue) and its full-attention twin (green) pass through the "
                     "same blocks; in each block the twin's text cross-attention output (arrow) replaces the window "
                     "row's own.")),
        "zh": dict(
            what="仅用窗口注意力时只能看到画面的一部分，构图可能漂移。双路径从同一潜变量再运行一份全注意力的条件分支；"
                 "在每个块中，用它的文本交叉注意力输出替换窗口行的输出，从而把全局构图带回来。",
            where="与窗口补丁在同一模型上，顺序不限；再加上交叉注意力缓存，可只在每隔几步时运行全注意力分支。",
            panel="面板显示本次运行采用的执行方式（batched 或 sequential）以及带全注意力孪生行时一次调用的显存；"
                  "上次运行一行统计了运行孪生行的调用次数。",
            errors=[("this model has no FreeSwim Window Attention Patch", "给模型加上窗口补丁。"),
                    ("start_percent (...) must be below end_percent", "让 start_percent 小于 end_percent。"),
                    ("... adds attention layers between a block's self- and cross-attention",
                     "对这种 Wan 变体（S2V、HuMo、Animate）只使用窗口补丁。")],
            picture=("dual_path.png", "窗口行（蓝色）与其全注意力孪生行（绿色）经过相同的块；在每个块中，孪生行的文本交叉注意力"
                     "输出（箭头）替换窗口行自己的输出。")),
    },
    "FreeSwimCrossAttnCache": {
        "en": dict(
            what="The full-attention twin costs a whole extra pass. The cache runs it only on guide steps (every "
                 "guide_interval scheduled steps), stores its cross-attention features of every block, and reuses "
                 "them on the steps between, where neither the twin nor the window row's text cross-attention runs.",
            where="On the same model as Dual-Path Override (either order).",
            panel="The panel shows where the features will live (GPU, pinned host memory, or off) and their size; "
                  "the last run's line counts guide and reuse calls.",
            errors=[("this model has no Dual-Path Override", "Add Dual-Path Override to the model, or remove the cache."),
                    ("... of features ... do not fit in ... memory (log)", "Use storage cpu or precision fp8.")],
            picture=("dual_path.png", "On guide steps the twin (green) runs and its cross-attention features are "
                     "stored; on the steps between, the window row (blue) reads them back.")),
        "zh": dict(
            what="全注意力孪生行相当于多跑一整遍。缓存只在引导步（每隔 guide_interval 个调度步）运行它，保存每个块的交叉注意力特征，"
                 "并在中间步复用；中间步既不运行孪生行，也不运行窗口行的文本交叉注意力。",
            where="与双路径覆盖在同一模型上，顺序不限。",
            panel="面板显示特征存放位置（GPU、锁页内存或关闭）及其大小；上次运行一行统计引导与复用的调用次数。",
            errors=[("this model has no Dual-Path Override", "给模型加上双路径覆盖，或移除缓存。"),
                    ("... of features ... do not fit in ... memory（日志）", "使用 storage cpu 或 precision fp8。")],
            picture=("dual_path.png", "在引导步运行孪生行（绿色）并保存其交叉注意力特征；在中间步，窗口行（蓝色）读回这些特征。")),
    },
    "FreeSwimLatentUpscaleRefine": {
        "en": dict(
            what="FreeSwim's coarse-to-fine pass: the clip is first sampled at the native size, then upscaled to the "
                 "target size, noised back to part of the schedule (strength) and denoised again with the "
                 "FreeSwim-patched model, which adds detail while the native pass keeps the layout.",
            where="`KSampler (native size) -> Latent Upscale Refine (FreeSwim-patched model, VAE) -> VAE Decode "
                  "(Tiled)`. For Wan2.2 A14B connect both experts: model (low noise) and model_high_noise.",
            panel="The panel shows the refine's size and memory, and after a run the time of each phase (decode, "
                  "resize, encode, sampling) and the VAE's tiles.",
            errors=[("target ... is not a multiple of 16 px", "Use the nearest valid size the message names."),
                    ("the pixel upscale path ... needs a VAE", "Connect the model's VAE, or set upscale_path to latent."),
                    ("model_high_noise (...) and model (...) are not the two experts of one Wan2.2 A14B pair",
                     "Connect the two files of one pair (T2V with T2V, I2V with I2V).")],
            picture=("refine.png", "The phases: the native clip (small), upscaled to the target (large), noised to "
                     "strength and denoised over the schedule's tail (the bar's coloured part).")),
        "zh": dict(
            what="FreeSwim 的由粗到精阶段：先以原生尺寸采样，再放大到目标尺寸，按强度（strength）重新加噪到调度的某一处，"
                 "然后用经 FreeSwim 补丁的模型重新去噪；原生结果保留构图，精修增加细节。",
            where="`KSampler（原生尺寸）-> 潜空间放大精修（经 FreeSwim 补丁的模型、VAE）-> VAE 解码（分块）`。"
                  "Wan2.2 A14B 需连接两个专家：model（低噪声）与 model_high_noise。",
            panel="面板显示精修的尺寸与显存；运行后显示各阶段（解码、缩放、编码、采样）的耗时以及 VAE 的分块。",
            errors=[("target ... is not a multiple of 16 px", "使用报错信息给出的最接近的有效尺寸。"),
                    ("the pixel upscale path ... needs a VAE", "连接模型的 VAE，或把 upscale_path 设为 latent。"),
                    ("model_high_noise (...) and model (...) are not the two experts of one Wan2.2 A14B pair",
                     "连接同一对中的两个文件（T2V 配 T2V，I2V 配 I2V）。")],
            picture=("refine.png", "各阶段：原生视频（小）放大到目标尺寸（大），按强度加噪，并在调度尾段去噪（进度条的彩色部分）。")),
    },
}

HEADINGS = {
    "en": dict(what="What it does", where="Where it goes", inputs="Inputs", input="input", default="default",
               does="what it does", when="when to change it", panel="The panel", errors="Errors and their fix",
               message="message", fix="fix", picture="Picture", output="Output", none="-",
               required="required", optional="optional", on="on", off="off"),
    "zh": dict(what="作用", where="在图中的位置", inputs="输入", input="输入", default="默认值", does="作用",
               when="何时修改", panel="面板", errors="错误与修复", message="信息", fix="修复方法", picture="图示",
               output="输出", none="-", required="必需", optional="可选", on="开", off="关"),
}

MAIN_ZH = {"nodeCategories": {"FreeSwim": "FreeSwim"}}
SETTINGS_ZH = {"FreeSwim_VRAMGB": {"name": "FreeSwim：用于估算的 GPU 显存（GB，0 表示本机）"}}
