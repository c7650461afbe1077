"""The SAC update on a GPU (skipped without CUDA): the captured CUDA graph, compiled or not, does the same updates
as eager PyTorch from the same state and random stream, and TF32 changes the numbers only slightly."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from eatsched.algos import registry  # noqa: E402
from eatsched.algos.sac import SACAgent, make_updater  # noqa: E402
from eatsched.bench.train import _filled_buffer  # noqa: E402
from eatsched.core.config import EATConfig  # noqa: E402

CFG = EATConfig(nodes=4, queue_len=6)


def _losses(algo: str, updates: int, **how) -> np.ndarray:
    """Losses of ``updates`` updates after the updater's 3 warm-up updates (the graph's warm-up is real)."""
    agent = SACAgent(registry.get(algo).default_args(), CFG.queue_len, CFG.nodes, device="cuda", seed=0)
    buf, _, _ = _filled_buffer(agent, CFG, "cuda", rows=40)
    up = make_updater(agent, buf, **how)
    if not how.get("graph", True):
        for _ in range(3):
            up()
    rows = [up().clone() for _ in range(updates)]
    torch.cuda.synchronize()
    return torch.stack(rows).cpu().numpy()


@pytest.mark.parametrize("algo", ["eat", "eat-da", "lad-ts"])
@pytest.mark.parametrize("compile", [False, True])
def test_graph_replay_equals_eager(algo, compile):
    eager = _losses(algo, 5, graph=False)
    graphed = _losses(algo, 5, graph=True, compile=compile, tf32=False)
    assert np.isfinite(graphed).all()
    np.testing.assert_allclose(graphed[:, :2], eager[:, :2], rtol=2e-3, atol=2e-3)


def test_tf32_stays_close_and_restores_the_flag():
    torch.backends.cuda.matmul.allow_tf32 = False
    eager = _losses("eat", 3, graph=False)
    tf32 = _losses("eat", 3, graph=True, compile=False, tf32=True)
    assert torch.backends.cuda.matmul.allow_tf32 is False
    np.testing.assert_allclose(tf32[:, :2], eager[:, :2], rtol=5e-2, atol=5e-2)
    assert not np.allclose(tf32[:, :2], eager[:, :2], rtol=1e-7, atol=0)  # TF32 was really on while capturing
