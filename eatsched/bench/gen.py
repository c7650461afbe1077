"""``eat bench gen``: per-step time of an SD-1.x-shaped UNet, eager vs ours (CUDA graph) vs graph floor.

On CUDA the UNet has Stable Diffusion 1.4's real shape (about 860M parameters; config written out below,
random weights, fp16) and runs one denoising step with classifier-free guidance (batch 2) as the
pipeline does. Three timings per step:

* ``eager``: ``unet(latent, t, text)`` as diffusers runs it;
* ``ours``: the same call through ``GraphedUNet`` (what the backend does with ``cuda_graph=True``):
  input copies, graph replay, output copy;
* ``floor``: replaying a captured graph of the step and nothing else.

On a CPU a tiny UNet runs instead (``eat bench gen`` stays testable); there are no graphs on a CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

SD14_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1,
    act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=768, attention_head_dim=8,
)
"""CompVis/stable-diffusion-v1-4 ``unet/config.json``, written out (no download)."""

TEXT_TOKENS = 77


@dataclass
class BenchSettings:
    device: str = "cpu"
    """cpu (tiny UNet, fp32) or cuda (SD 1.4-shaped UNet, fp16)"""
    size: int | None = None
    """image side in px (latent = size / 8); default 512 on CUDA, 64 on CPU"""
    iters: int = 20
    """timed steps per variant (after warm-up)"""
    warmup: int = 3
    """untimed steps before timing"""
    seed: int = 0
    """seed of the random weights and inputs"""


def _time_ms(fn, iters: int, cuda: bool) -> float:
    import torch

    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000.0 / iters


def run_bench(s: BenchSettings) -> dict:
    import torch
    from diffusers import UNet2DConditionModel

    from ..gen.tiny import TEXT_WIDTH, tiny_unet_config
    from ..parallel.graphs import GraphedUNet

    cuda = s.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise ValueError("device cuda: CUDA is not available on this machine")
    size = s.size or (512 if cuda else 64)
    if size % 64:
        raise ValueError(f"size {size}: use a multiple of 64 px")
    dtype = torch.float16 if cuda else torch.float32
    config = SD14_UNET if cuda else tiny_unet_config()
    text_width = 768 if cuda else TEXT_WIDTH
    gen = torch.Generator("cpu").manual_seed(s.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        unet = UNet2DConditionModel(**config)
    unet = unet.to(s.device, dtype).eval()
    latent = torch.randn(2, 4, size // 8, size // 8, generator=gen).to(s.device, dtype)
    text = torch.randn(2, TEXT_TOKENS, text_width, generator=gen).to(s.device, dtype)
    t = torch.tensor(500, device=s.device)
    result = {"device": torch.cuda.get_device_name() if cuda else "cpu", "size_px": size, "dtype": str(dtype),
              "unet_params_m": round(sum(p.numel() for p in unet.parameters()) / 1e6, 1), "cfg_batch": 2,
              "iters": s.iters}

    with torch.inference_mode():
        def eager():
            return unet(latent, t, text, return_dict=False)[0]

        for _ in range(s.warmup):
            eager()
        result["eager_ms"] = _time_ms(eager, s.iters, cuda)
        if not cuda:
            result["ours_ms"] = result["eager_ms"]
            result["note"] = "CPU: no CUDA graphs; ours = eager"
            return result

        graphed = GraphedUNet(unet)
        for _ in range(s.warmup):
            eager()  # now through GraphedUNet (captures on the first call)
        result["ours_ms"] = _time_ms(eager, s.iters, cuda)
        graphed.uninstall()

        static_in = latent.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                unet(static_in, t, text, return_dict=False)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            unet(static_in, t, text, return_dict=False)
        for _ in range(s.warmup):
            graph.replay()
        result["floor_ms"] = _time_ms(graph.replay, s.iters, cuda)
    result["ours_vs_floor"] = round(result["ours_ms"] / result["floor_ms"], 3)
    result["eager_vs_floor"] = round(result["eager_ms"] / result["floor_ms"], 3)
    result["target_ours_vs_floor"] = 1.25
    return result


SD14_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                layers_per_block=2, norm_num_groups=32, sample_size=512)
"""CompVis/stable-diffusion-v1-4 ``vae/config.json``, written out."""


def write_random_sd14(path, seed: int = 0):
    """A Stable Diffusion 1.4-shaped pipeline with random weights (UNet, VAE and a 12-layer 768-wide CLIP text
    encoder of SD 1.4's shape over a byte-level vocabulary), saved in fp16 to ``path``: real-size timings
    (``eat calibrate --model PATH``) without downloading weights. Its images are noise."""
    from pathlib import Path

    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from ..gen.tiny import MAX_TOKENS, write_tokenizer

    path = Path(path)
    vocab = write_tokenizer(path / "tokenizer")
    text_config = CLIPTextConfig(vocab_size=vocab, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                 num_hidden_layers=12, max_position_embeddings=MAX_TOKENS, hidden_act="quick_gelu",
                                 bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=768)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**SD14_UNET)
        vae = AutoencoderKL(**SD14_VAE)
        text_encoder = CLIPTextModel(text_config)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder,
                                   tokenizer=CLIPTokenizer.from_pretrained(path / "tokenizer"), scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.to(torch.float16).save_pretrained(path)
    return path
