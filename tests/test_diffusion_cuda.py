"""The diffusers backend on a GPU (skipped without CUDA): fp16, CUDA-graph replay equals eager and the
captured graph is reused by the next task of the same shape."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from eatsched.gen.backend import PatchJob  # noqa: E402
from eatsched.gen.backends.diffusers_backend import DiffusersBackend  # noqa: E402
from eatsched.gen.local_group import group_spec  # noqa: E402
from eatsched.gen.tiny import write_tiny_pipeline  # noqa: E402


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return str(write_tiny_pipeline(tmp_path_factory.mktemp("models") / "sd", seed=0))


def _job(task_id: str, size: int = 64, steps: int = 6) -> PatchJob:
    return PatchJob(task_id=task_id, prompt="a red cat", model="tiny", steps=steps, seed=3, width=size, height=size,
                    group=group_spec("solo", 1), negative_prompt="blurry")


def test_cuda_graph_equals_eager_and_is_reused(sd):
    eager = DiffusersBackend(model=sd, device="cuda")
    eager.run(_job("e"))
    reference = eager.last_image.numpy()
    eager.release()

    graphed = DiffusersBackend(model=sd, device="cuda", cuda_graph=True)
    first = graphed.run(_job("g1"))
    assert first.extra["cuda_graph"] and graphed.pipe.unet.dtype == torch.float16
    np.testing.assert_allclose(graphed.last_image.numpy(), reference, atol=2e-3)
    captures = graphed._graphed.captures
    assert captures == 1 and graphed._graphed.replays == 6
    second = graphed.run(_job("g2", steps=8))
    assert graphed._graphed.captures == captures  # same shape: the captured graph is replayed
    assert not second.reloaded and second.init_s == 0.0
    graphed.run(_job("g3", size=128))
    assert graphed._graphed.captures == captures + 1  # a new shape is captured once
    graphed.release()


def test_patch_parallel_fp16_on_one_gpu_over_gloo(sd):
    """The wrappers in fp16 on CUDA tensors. Two ranks share the one GPU here, so the group uses gloo
    (NCCL refuses two ranks on one device); the NCCL path needs a machine with >= 2 GPUs."""
    from eatsched.gen.local_group import run_local_group

    single = DiffusersBackend(model=sd, device="cuda")
    single.run(_job("one"))
    reference = single.last_image.numpy()
    single.release()
    g = group_spec("pair", 2)
    jobs = [(PatchJob(**{**_job("s").__dict__, "group": g}), {"mode": "sync"}),
            (PatchJob(**{**_job("a").__dict__, "group": g}), {"mode": "stale"})]
    ranks = run_local_group(2, jobs, {"model": sd, "device": "cuda:0", "dist_backend": "gloo", "warmup_steps": 2})
    sync, stale = ranks[0][0][1], ranks[0][1][1]
    assert np.array_equal(ranks[1][0][1], sync) and np.array_equal(ranks[1][1][1], stale)
    sync_diff = float(np.abs(sync - reference).max())
    psnr = float(10 * np.log10(1.0 / np.mean((stale.astype(np.float64) - reference) ** 2)))
    print(f"fp16 k=2: sync max|diff| {sync_diff:.2e}, stale PSNR {psnr:.1f} dB")
    assert sync_diff <= 2e-2
    assert psnr >= 30.0
