"""Tiny Stable-Diffusion-shaped pipelines and CLIP models with random weights, written to a directory.

No weights or tokenizers can be downloaded here, so tests (and ``eat bench gen`` / ``eat calibrate`` on a
CPU) build their models from configs: a byte-level CLIP tokenizer from a generated vocabulary (every byte
is a token, no merges), a 2-layer CLIP text encoder, a 2-level UNet with self- and cross-attention at both
levels, and a 2-level VAE (latent = image / 2). Seeded, so every process builds the same weights.
"""

from __future__ import annotations

import json
from pathlib import Path

TEXT_WIDTH = 32
MAX_TOKENS = 77


def _byte_alphabet() -> list[str]:
    """The printable stand-ins GPT-2/CLIP byte-level BPE uses for the 256 byte values."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_tokenizer(path: str | Path) -> int:
    """A byte-level CLIPTokenizer (vocab.json, merges.txt) in ``path``; returns the vocabulary size."""
    from transformers import CLIPTokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    chars = _byte_alphabet()
    tokens = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]
    (path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(vocab_file=str(path / "vocab.json"), merges_file=str(path / "merges.txt"),
                        model_max_length=MAX_TOKENS) if _slow_tokenizer_api() else CLIPTokenizer.from_pretrained(path)
    tok.model_max_length = MAX_TOKENS
    tok.save_pretrained(path)
    return len(tokens)


def _slow_tokenizer_api() -> bool:
    import inspect

    from transformers import CLIPTokenizer

    return "vocab_file" in inspect.signature(CLIPTokenizer.__init__).parameters


def _text_config(vocab_size: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=TEXT_WIDTH, intermediate_size=37, num_attention_heads=4,
                          num_hidden_layers=2, max_position_embeddings=MAX_TOKENS, bos_token_id=0, eos_token_id=1,
                          pad_token_id=1, projection_dim=16)


def tiny_unet_config() -> dict:
    return dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=TEXT_WIDTH,
                attention_head_dim=8, norm_num_groups=8)


def write_tiny_pipeline(path: str | Path, seed: int = 0) -> Path:
    """Save a random tiny StableDiffusionPipeline (diffusers layout) to ``path`` and return it.

    Images must be a multiple of 4 * k px high for k patches (VAE factor 2, one UNet downsample)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    path = Path(path)
    vocab = write_tokenizer(path / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(path / "tokenizer")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**tiny_unet_config())
        vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                            norm_num_groups=8, sample_size=32)
        text_encoder = CLIPTextModel(_text_config(vocab))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(path)
    return path


def write_tiny_clip(path: str | Path, seed: int = 0) -> Path:
    """Save a random tiny CLIPModel and its tokenizer to ``path`` (for CLIP scoring in tests)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    path = Path(path)
    vocab = write_tokenizer(path)
    config = CLIPConfig(text_config=_text_config(vocab).to_dict(),
                        vision_config=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                           num_hidden_layers=2, image_size=32, patch_size=8, projection_dim=16),
                        projection_dim=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    model.save_pretrained(path)
    return path
