"""CLIP score of an image against its prompt: the measured counterpart of the quality model's q(s).

We report the raw cosine similarity of CLIP's image and text embeddings (clipped at 0), the scale of the
paper's quality q(s) (q_max = 0.27); torchmetrics' CLIPScore is 100x this.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipScorer:
    """A transformers ``CLIPModel`` and its tokenizer, loaded offline from ``path`` (a directory or a
    cached Hugging Face id such as ``openai/clip-vit-base-patch32``)."""

    def __init__(self, path: str, device: str = "cpu"):
        from transformers import AutoTokenizer, CLIPModel

        from .loading import ModelNotFoundError, offline

        offline()
        try:
            self.model = CLIPModel.from_pretrained(path, local_files_only=True).to(device).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except OSError as e:
            raise ModelNotFoundError(f"CLIP model {path!r} is not a local directory or cached model: {e}. "
                                     "Pass --clip-model DIR with a transformers CLIPModel saved there.") from None
        self.device = device
        self.image_size = self.model.config.vision_config.image_size
        mean, std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
        pre = Path(path) / "preprocessor_config.json"
        if pre.is_file():
            cfg = json.loads(pre.read_text())
            mean, std = cfg.get("image_mean", mean), cfg.get("image_std", std)
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> CLIP's input: shortest side resized, centre crop, normalized."""
        size = self.image_size
        h, w = images.shape[-2:]
        scale = size / min(h, w)
        x = F.interpolate(images.float(), size=(max(size, round(h * scale)), max(size, round(w * scale))),
                          mode="bicubic", align_corners=False, antialias=True)
        top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
        x = x[..., top:top + size, left:left + size].clamp(0, 1)
        return ((x - self.mean) / self.std).to(self.device)

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: list[str]) -> list[float]:
        """Cosine similarity (>= 0) of each image (B, 3, H, W in [0, 1]) with its prompt."""
        tokens = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt").to(self.device)
        img = self.model.get_image_features(pixel_values=self._pixels(images))
        txt = self.model.get_text_features(**tokens)
        img = getattr(img, "pooler_output", img)
        txt = getattr(txt, "pooler_output", txt)
        cos = F.cosine_similarity(img.float(), txt.float(), dim=-1)
        return [max(0.0, float(c)) for c in cos]
