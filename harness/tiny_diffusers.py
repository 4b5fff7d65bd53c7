"""A tiny, randomly initialised diffusers Wan text-to-video pipeline, built offline.

Tests of the command line tools need a real pipeline folder on disk that
``diffusers.WanPipeline.from_pretrained(folder)`` loads like a downloaded one,
but no model can be downloaded here (no Hugging Face Hub). So every part is
made from a config with seeded random weights: the Wan transformer, the Wan VAE
(real 4x temporal / 8x spatial compression, so frame counts are 4k+1 and
height/width multiples of 16), a UMT5 text encoder and a character-level
tokenizer built with the ``tokenizers`` library, plus Wan's UniPC scheduler.
The result runs on a CPU in a few seconds.

diffusers and transformers are imported inside the functions, so importing
this module needs neither.
"""
from __future__ import annotations

import string
from pathlib import Path

TEXT_DIM = 32           # UMT5 d_model == the transformer's text_dim
VOCAB_SIZE = 512
MAX_SEQUENCE_LENGTH = 512

TRANSFORMER_CONFIG = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32, in_channels=16,
    out_channels=16, text_dim=TEXT_DIM, freq_dim=32, ffn_dim=128, num_layers=2,
    cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
)
VAE_CONFIG = dict(
    base_dim=4, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
    temperal_downsample=[False, True, True],
)
TEXT_ENCODER_CONFIG = dict(
    vocab_size=VOCAB_SIZE, d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
    relative_attention_num_buckets=32, relative_attention_max_distance=128,
    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
)
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True,
    flow_shift=3.0,
)


def visible_weights(model):
    """Redraw a tiny random diffusers Wan transformer's weights so that every layer acts visibly (the
    default init leaves some at 0: the modulation tables, some projections). Returns the model."""
    import torch
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() > 1:
                p.normal_(0, p.shape[1] ** -0.5 if p.dim() == 2 else 0.1)
            elif "scale_shift_table" in name:
                p.normal_(0, 0.5)
    return model


def tiny_tokenizer():
    """A ``PreTrainedTokenizerFast`` that splits lower-cased text into characters and
    appends ``</s>`` (ids: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2); made without any download."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex("."), behavior="isolated")])
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        model_max_length=MAX_SEQUENCE_LENGTH)


def tiny_wan_pipeline(seed: int = 0):
    """The tiny ``WanPipeline`` in memory, float32 on the CPU; the same ``seed`` gives the
    same weights (the global torch RNG state is left as it was)."""
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = WanTransformer3DModel(**TRANSFORMER_CONFIG)
        torch.manual_seed(seed + 1)
        vae = AutoencoderKLWan(**VAE_CONFIG)
        torch.manual_seed(seed + 2)
        text_encoder = UMT5EncoderModel(UMT5Config(**TEXT_ENCODER_CONFIG))
    return WanPipeline(
        tokenizer=tiny_tokenizer(), text_encoder=text_encoder.eval(), transformer=transformer.eval(),
        vae=vae.eval(), scheduler=UniPCMultistepScheduler(**SCHEDULER_CONFIG))


def save_tiny_wan_pipeline(folder, seed: int = 0) -> Path:
    """Build the tiny pipeline and ``save_pretrained`` it into ``folder`` (created if
    missing); returns the folder as a ``Path``, ready for ``WanPipeline.from_pretrained``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tiny_wan_pipeline(seed).save_pretrained(folder)
    return folder
