"""Loading diffusers pipelines offline: from a local directory or the local Hugging Face cache only."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path


class ModelNotFoundError(FileNotFoundError):
    """The model is neither a local diffusers directory nor in the local Hugging Face cache."""


def offline() -> None:
    """Forbid network access by the Hugging Face libraries in this process (set before they load)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _missing(model: str, why: str) -> ModelNotFoundError:
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    return ModelNotFoundError(
        f"model {model!r}: {why}. eatsched never downloads weights. Provide a diffusers model directory "
        f"(one with model_index.json, e.g. made by `pipe.save_pretrained(DIR)`) and pass --model DIR, or put "
        f"the model in the Hugging Face cache ({cache}) on a machine with network access, e.g. "
        f"`huggingface-cli download {model if '/' in model else 'CompVis/stable-diffusion-v1-4'}`, "
        "and copy the cache here."
    )


def load_pipeline(model: str, device: str = "cpu"):
    """A text-to-image ``DiffusionPipeline`` on ``device``: fp16 on CUDA, fp32 on CPU, no safety checker."""
    offline()
    import torch
    from diffusers import DiffusionPipeline

    dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    path = Path(model).expanduser()
    kwargs: dict = {"torch_dtype": dtype, "local_files_only": True}
    if path.exists():
        index = path / "model_index.json"
        if not index.is_file():
            raise _missing(model, f"the directory {str(path)!r} has no model_index.json (not a diffusers pipeline)")
        components = json.loads(index.read_text())
        source = str(path)
    else:
        if model.startswith((".", "/", "~")) or model.count("/") != 1:
            raise _missing(model, "no such directory")
        components = None
        source = model
    if components is None or "safety_checker" in components:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # diffusers >= 0.36 renamed torch_dtype to dtype
            pipe = DiffusionPipeline.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as e:
        if path.exists():
            raise
        raise _missing(model, f"not found in the local Hugging Face cache ({type(e).__name__})") from None
    if not hasattr(pipe, "unet"):
        raise ValueError(f"model {model!r}: {type(pipe).__name__} has no UNet; eatsched needs a UNet text-to-image "
                         "pipeline (Stable Diffusion 1.x/2.x/XL)")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
