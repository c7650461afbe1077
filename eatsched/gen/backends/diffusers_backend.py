"""The ``diffusers`` backend: real Stable-Diffusion-class generation with patch parallelism over
torch.distributed, CLIP-scored, keeping the model, process group and CUDA graphs loaded for reuse.

One worker process per GPU (or per CPU worker). For a job of k patches the k members rendezvous at the
job's ``GroupSpec`` address (gloo on CPU, NCCL on CUDA), each computes its band of rows
(``eatsched.parallel``), and every rank decodes and returns the same image.
"""

from __future__ import annotations

import io
import time

import torch

from ..backend import Backend, PatchJob, PatchResult


class DiffusersBackend(Backend):
    """Generates ``PatchJob``s with a diffusers text-to-image pipeline.

    :param model: a diffusers model directory or a Hugging Face id in the local cache; None: each job's
        ``model`` field names it
    :param device: ``cpu`` or ``cuda`` (``cuda:N`` picks a GPU); fp16 on CUDA, fp32 on CPU
    :param mode: ``stale`` (DistriFusion: stale neighbours, asynchronous exchange) or ``sync`` (equals one device)
    :param warmup_steps: synchronous steps before ``stale`` mode goes asynchronous (DistriFusion uses 4)
    :param cuda_graph: capture the denoising step as a CUDA graph per shape and patch phase, and replay it
    :param clip_model: a transformers CLIPModel directory (or cached id) for ``clip_score``; None: no score
    :param dist_backend: ``gloo`` or ``nccl``; None: nccl on CUDA, gloo on CPU
    :param dist_timeout_s: how long to wait for the other members of a group
    :param threads: CPU threads for torch in this process (None: torch's default). Several CPU workers on one
        machine should use one each: two threads per process made a step 20-30x slower on a shared 2-core box
    """

    name = "diffusers"

    def __init__(self, model: str | None = None, device: str = "cpu", mode: str = "stale", warmup_steps: int = 4,
                 cuda_graph: bool = False, clip_model: str | None = None, dist_backend: str | None = None,
                 dist_timeout_s: float = 120.0, threads: int | None = None):
        from ...parallel.context import MODES
        from ...parallel.groups import ProcessGroupCache

        if mode not in MODES:
            raise ValueError(f"mode: {mode!r} is not one of {MODES}")
        if warmup_steps < 0:
            raise ValueError("warmup_steps: must be >= 0")
        device = str(device)
        if device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise ValueError(f"device {device!r}: CUDA is not available on this machine")
            if ":" in device:
                torch.cuda.set_device(torch.device(device))
        elif device != "cpu":
            raise ValueError(f"device {device!r}: use cpu, cuda or cuda:N")
        if cuda_graph and not device.startswith("cuda"):
            raise ValueError("cuda_graph: needs device cuda")
        if threads is not None:
            if threads < 1:
                raise ValueError("threads: must be >= 1")
            torch.set_num_threads(threads)
        from ..loading import offline

        offline()
        import diffusers  # noqa: F401  (imported now so a job's init_s measures loading, not importing)

        self.model = model
        self.device = device
        self.mode = mode
        self.warmup_steps = warmup_steps
        self.cuda_graph = cuda_graph
        self.clip_model = clip_model
        self.groups = ProcessGroupCache(dist_backend or ("nccl" if device.startswith("cuda") else "gloo"),
                                        timeout_s=dist_timeout_s)
        self.pipe = None
        self._loaded: str | None = None
        self._patch_unet = None
        self._graphed = None
        self._clip = None
        self._group_id: str | None = None
        self._contexts: dict[tuple, object] = {}
        self.last_image: torch.Tensor | None = None  # the last job's image, (1, 3, H, W) in [0, 1]

    # -- loading ---------------------------------------------------------------------------------------
    def _load(self, model: str) -> None:
        from ...parallel.graphs import GraphedUNet
        from ...parallel.unet import PatchParallelUNet
        from ..loading import load_pipeline

        self._drop_model()
        self.pipe = load_pipeline(model, self.device)
        self._patch_unet = PatchParallelUNet.of(self.pipe.unet)
        if self.cuda_graph:
            self._graphed = GraphedUNet(self.pipe.unet, self._patch_unet)
        self._loaded = model

    def _scorer(self):
        if self._clip is None and self.clip_model:
            from ..clip import ClipScorer

            self._clip = ClipScorer(self.clip_model, self.device)
        return self._clip

    # -- one job ---------------------------------------------------------------------------------------
    def run(self, job: PatchJob) -> PatchResult:
        self._check(job)
        start = time.perf_counter()
        model = self.model or job.model
        model_loaded = self.pipe is None or self._loaded != model
        if model_loaded:
            self._load(model)
        new_group = job.group.group_id != self._group_id
        if new_group:  # state bound to the old communicator goes before it does
            self._contexts.clear()
            if self._graphed is not None:
                self._graphed.forget_patch_graphs()
        group, group_s = self.groups.join(job.group)
        reused = not model_loaded and not new_group
        self._group_id = job.group.group_id
        init_s = 0.0 if reused else time.perf_counter() - start

        begin = time.perf_counter()
        image, stats = self._generate(job, group)
        self.last_image = image
        denoise_s = time.perf_counter() - begin
        png = _png(image)
        scorer = self._scorer() if job.group.rank == 0 else None
        clip = scorer.score(image, [job.prompt])[0] if scorer is not None else None
        exec_s = time.perf_counter() - begin
        extra = {"model_loaded": model_loaded, "group_formed_s": group_s, "patches": job.group.world_size,
                 "mode": self.mode if job.group.world_size > 1 else "single", "denoise_decode_s": denoise_s,
                 "device": self.device, "cuda_graph": self.cuda_graph, **stats}
        return PatchResult(task_id=job.task_id, rank=job.group.rank, init_s=init_s, exec_s=exec_s,
                           reloaded=not reused, image_png=png, clip_score=clip, extra=extra)

    def _generate(self, job: PatchJob, group) -> tuple[torch.Tensor, dict]:
        from ...parallel.context import PatchContext

        k = job.group.world_size
        ctx = None
        if k > 1:
            latent_rows = job.height // self.pipe.vae_scale_factor
            self._patch_unet.check_rows(latent_rows, k)
            # the UNet's input shapes (CFG doubles the batch) and the exchange pattern
            key = (job.height, job.width, job.guidance_scale > 1.0, self.mode, self.warmup_steps)
            ctx = self._contexts.get(key) if self.cuda_graph else None
            if ctx is None:
                ctx = PatchContext(job.group.rank, k, group, mode=self.mode, warmup_steps=self.warmup_steps,
                                   flush_each_step=self.cuda_graph)
                if self.cuda_graph:
                    self._contexts[key] = ctx
            ctx.reset()
        generator = torch.Generator("cpu").manual_seed(job.seed)
        with torch.inference_mode(), self._patch_unet.active(ctx):
            out = self.pipe(job.prompt, negative_prompt=job.negative_prompt, num_inference_steps=job.steps,
                            guidance_scale=job.guidance_scale, height=job.height, width=job.width,
                            generator=generator, output_type="pt")
        image = out.images[:1].float().cpu()
        stats = {} if ctx is None else {"sync_exchanges": ctx.sync_exchanges, "async_exchanges": ctx.async_exchanges}
        return image, stats

    def _check(self, job: PatchJob) -> None:
        if job.steps < 1:
            raise ValueError(f"task {job.task_id}: steps must be >= 1 (got {job.steps})")
        if job.width % 8 or job.height % 8 or job.width <= 0 or job.height <= 0:
            raise ValueError(f"task {job.task_id}: width and height must be positive multiples of 8 "
                             f"(got {job.width}x{job.height})")
        if job.group.world_size not in (1, 2, 4, 8):
            raise ValueError(f"task {job.task_id}: {job.group.world_size} patches; use 1, 2, 4 or 8")

    # -- release ---------------------------------------------------------------------------------------
    def _drop_model(self) -> None:
        if self._graphed is not None:
            self._graphed.uninstall()
        self.pipe = self._patch_unet = self._graphed = None
        self._loaded = None
        self._contexts.clear()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def release(self) -> None:
        """Drop the model, the CUDA graphs and the process group."""
        self._drop_model()
        self.groups.release()
        self._group_id = None


def _png(image: torch.Tensor) -> bytes:
    """(1, 3, H, W) in [0, 1] -> PNG bytes, rounded as diffusers' ``output_type="pil"`` does."""
    from PIL import Image

    array = (image[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()
