"""``eat bench train``: gradient updates/s of the SAC family, FLOPs per update, the fraction of the machine's
measured matmul rate, and env-steps/s while training."""

from __future__ import annotations

import time

import numpy as np

from ..core.config import EATConfig

AUTHORS_UPDATES_PER_S_CPU = 6.8
"""Authors' EAT training (tianshou SAC, batch 512) on the 2-core CPU machine (SPEC section 6)."""
AUTHORS_UPDATES_PER_S_H100 = 18.0


def matmul_rate(device: str = "cpu", n: int = 2048, seconds: float = 2.0) -> float:
    """GFLOP/s of a large fp32 matmul on the threads torch uses (the machine's practical ceiling)."""
    import torch  # noqa: PLC0415

    g = torch.Generator(device).manual_seed(0)
    a = torch.randn(n, n, generator=g, device=device)
    b = torch.randn(n, n, generator=g, device=device)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False
    (a @ b).sum().item()
    reps = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        c = a @ b
        reps += 1
    c.sum().item()  # synchronizes on CUDA
    dt = time.perf_counter() - t0
    return 2.0 * n**3 * reps / dt / 1e9


def _filled_buffer(agent, config: EATConfig, device, rows: int = 256):
    """A replay buffer holding real transitions (random actions) of the batched env."""
    import torch  # noqa: PLC0415

    from ..algos.sac import ReplayBuffer  # noqa: PLC0415
    from ..sim.vector import BatchedEATEnv  # noqa: PLC0415

    a = agent.args
    envs = BatchedEATEnv(a.num_envs, config)
    obs, _ = envs.reset(seed=0)
    buf = ReplayBuffer(rows * a.num_envs, a.num_envs, obs.shape[1:], config.action_dim, torch.device(device),
                       a.gamma, a.n_step)
    rng = np.random.default_rng(0)
    for _ in range(rows):
        act = rng.uniform(-1, 1, (a.num_envs, config.action_dim)).astype(np.float32)
        nxt, r, te, tr, infos = envs.step(act)
        buf.add_step(obs, act, nxt, r, te, tr, infos)
        obs = nxt
    return buf, envs, obs


def update_flops(agent, buffer) -> int:
    """FLOPs of one update (critic, actor, alpha, soft update), counted by torch's FLOP counter."""
    import torch  # noqa: PLC0415
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

    batch = buffer.sample(agent.args.batch_size, agent.generator)
    with FlopCounterMode(display=False) as fc:
        agent.update(batch)
    del torch
    return int(fc.get_total_flops())


_MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def matmul_floor(agent, buffer, reps: int = 30) -> dict:
    """Time of one update's matmuls alone: the profiler records every matmul of an update (op and shapes), then
    each is replayed by itself on random operands, best of ``reps``. Their sum against the whole update shows
    whether the update is FLOP-bound (CPU only: GPU kernels are asynchronous to this timing)."""
    from collections import Counter  # noqa: PLC0415

    import torch  # noqa: PLC0415
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    batch = buffer.sample(agent.args.batch_size, agent.generator)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        agent.update(batch)
    calls = Counter((e.name, tuple(tuple(s) for s in e.input_shapes)) for e in prof.events() if e.name in _MATMULS)
    g = torch.Generator().manual_seed(0)
    total_s = total_flops = 0.0
    for (name, shapes), n in calls.items():
        ops = [torch.randn(s, generator=g) if s else 1.0 for s in shapes[:3]]
        fn = {"aten::mm": torch.mm, "aten::addmm": torch.addmm, "aten::bmm": torch.bmm,
              "aten::baddbmm": torch.baddbmm}[name]
        a, b = (ops[0], ops[1]) if name in ("aten::mm", "aten::bmm") else (ops[1], ops[2])
        flops = 2.0 * a.numel() * b.shape[-1]
        args = ops[:2] if name in ("aten::mm", "aten::bmm") else ops[:3]
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            fn(*args)
            best = min(best, time.perf_counter() - t0)
        total_s += n * best
        total_flops += n * flops
    return {"matmul_only_ms": total_s * 1e3, "matmul_only_gflops": total_flops / total_s / 1e9}


def bench_update(algo: str, config: EATConfig, device: str = "cpu", seconds: float = 5.0, graph: bool | None = None,
                 peak_gflops: float | None = None, gpu_fast: bool = True) -> dict:
    """Gradient updates/s of ``algo`` at batch 512 (replay sampling included), with its FLOPs and the fraction of
    the matmul ceiling ``peak_gflops``, then env-steps/s of the training loop (act + step + store + ``utd``
    updates). On the CPU, given ``peak_gflops``, the fraction is instead the median over rounds of ~1 s, each
    against the ceiling measured just before it (the range comes with it).
    ``gpu_fast=False`` captures the plain update on CUDA (no torch.compile, no TF32)."""
    row = _bench_update(algo, config, device, seconds, graph, peak_gflops, gpu_fast)
    if not device.startswith("cuda"):
        row["path"] = "autograd"
    return row


def _bench_update(algo: str, config: EATConfig, device: str, seconds: float, graph: bool | None,
                  peak_gflops: float | None, gpu_fast: bool = True) -> dict:
    import torch  # noqa: PLC0415

    from ..algos import registry  # noqa: PLC0415
    from ..algos.sac import SACAgent, make_updater  # noqa: PLC0415

    agent = SACAgent(registry.get(algo).default_args(), config.queue_len, config.nodes, device=device, seed=0)
    buf, envs, obs = _filled_buffer(agent, config, device)
    flops = update_flops(agent, buf)
    updater = make_updater(agent, buf, graph, compile=None if gpu_fast else False, tf32=None if gpu_fast else False)
    for _ in range(3):
        updater()
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    # On the CPU the machine's speed drifts (a shared VM: the ceiling moved 116-299 GFLOP/s within a day), so the
    # ceiling is measured again before each of several rounds and each round's fraction uses its own ceiling.
    rounds = 1 if cuda else max(1, round(seconds))
    n, dt, per_round = 0, 0.0, []
    for _ in range(rounds):
        ceiling = matmul_rate(device, seconds=min(0.5, seconds)) if not cuda and peak_gflops else None
        m, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / rounds:
            for _ in range(10 if cuda else 1):
                updater()
                m += 1
            sync()
        elapsed = time.perf_counter() - t0
        n, dt = n + m, dt + elapsed
        if ceiling:
            per_round.append((m / elapsed * flops / 1e9 / ceiling, ceiling))
    ups = n / dt
    # the training loop: one policy forward for all envs, one env step, store, utd updates per env step
    utd, E = agent.args.utd, agent.args.num_envs
    due, steps = 0.0, 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        with torch.inference_mode():
            act = agent.act(torch.as_tensor(obs, device=device)).cpu().numpy()
        nxt, r, te, tr, infos = envs.step(act)
        buf.add_step(obs, act, nxt, r, te, tr, infos)
        obs = nxt
        steps += E
        due += E * utd
        while due >= 1.0:
            updater()
            due -= 1.0
    sync()
    env_sps = steps / (time.perf_counter() - t0)
    row = {"algo": algo, "device": device, "graph": bool(device.startswith("cuda") if graph is None else graph),
           "batch": agent.args.batch_size, "threads": torch.get_num_threads(), "updates_per_s": ups,
           "gflop_per_update": flops / 1e9, "achieved_gflops": ups * flops / 1e9,
           "env_steps_per_s_training": env_sps, "utd": utd, "num_envs": E,
           "path": getattr(updater, "path", "eager")}
    if not device.startswith("cuda"):
        row.update(matmul_floor(agent, buf))
        row["update_ms"] = 1e3 / ups
        row["batch8_ms"] = fixed_cost_ms(algo, config, min(1.0, seconds))
    if per_round:
        fractions = sorted(f for f, _ in per_round)
        row["matmul_gflops"] = float(np.median([c for _, c in per_round]))
        row["fraction_of_matmul"] = float(np.median(fractions))
        row["fraction_range"] = [fractions[0], fractions[-1]]
        row["rounds"] = len(per_round)
    elif peak_gflops:
        row["matmul_gflops"] = peak_gflops
        row["fraction_of_matmul"] = row["achieved_gflops"] / peak_gflops
    authors = AUTHORS_UPDATES_PER_S_H100 if device.startswith("cuda") else AUTHORS_UPDATES_PER_S_CPU
    row["x_authors"] = ups / authors
    return row


def time_to_heuristic(algo: str = "eat", nodes: int = 8, rate: float = 0.5, minutes: float = 60.0,
                      heuristic: str = "adaptive", eval_every: int = 2_000, eval_episodes: int = 20, seed: int = 0,
                      out=None) -> dict:
    """Wall time for ``algo``, trained with the shipped recipe (``sac.TEACHER_RECIPE``, ``sac.RECIPE_SETTING``) at one
    ``rate``, to first reach ``heuristic``'s efficiency (mean quality / mean response) on the validation seeds, with
    env steps/s while training; gives up after ``minutes`` (``reached`` False)."""
    import tempfile  # noqa: PLC0415

    from ..algos import registry  # noqa: PLC0415
    from ..algos.sac import RECIPE_SETTING, TEACHER_RECIPE  # noqa: PLC0415
    from ..algos.sac_train import train_sac  # noqa: PLC0415
    from ..algos.training import validate  # noqa: PLC0415

    cfg = EATConfig(nodes=nodes, rate=rate, **RECIPE_SETTING)
    target = validate(registry.make_policy(heuristic, cfg), cfg, eval_episodes)["efficiency"]
    hit: dict = {}

    def on_eval(row: dict) -> bool:
        if row["efficiency"] >= target and not hit:
            hit.update(row)
        return bool(hit)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train_sac(algo, cfg, out or tmp, minutes=minutes, seed=seed, progress=False, on_eval=on_eval,
                  overrides={**TEACHER_RECIPE, "eval_every": eval_every, "eval_episodes": eval_episodes})
        wall = time.perf_counter() - t0
    return {"algo": algo, "nodes": nodes, "rate": rate, "heuristic": heuristic, "target_efficiency": target,
            "reached": bool(hit), "wall_s": hit.get("wall_s", wall), "env_steps": hit.get("step"),
            "updates": hit.get("updates"), "efficiency": hit.get("efficiency"),
            "env_steps_per_s": hit["step"] / hit["wall_s"] if hit else None, "budget_minutes": minutes}


def fixed_cost_ms(algo: str, config: EATConfig, seconds: float = 1.0) -> float:
    """ms of one CPU update at batch 8, where the matmuls and elementwise work are ~1/64 of batch 512's: what an
    update costs whatever its size (Python, op dispatch, kernel launches, the optimizer's pass over the
    parameters)."""
    from ..algos import registry  # noqa: PLC0415
    from ..algos.sac import SACAgent, make_updater  # noqa: PLC0415

    args = registry.get(algo).default_args(batch_size=8)
    agent = SACAgent(args, config.queue_len, config.nodes, device="cpu", seed=0)
    buf, _, _ = _filled_buffer(agent, config, "cpu", rows=16)
    updater = make_updater(agent, buf)
    for _ in range(3):
        updater()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        updater()
        n += 1
    return (time.perf_counter() - t0) / n * 1e3
