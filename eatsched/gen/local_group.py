"""Run a patch-parallel group of k diffusers workers as local processes (tests, calibration, benchmarks).

Each member is a real process (``torch.multiprocessing`` spawn) with its own ``DiffusersBackend``; they
rendezvous on a free loopback port and run the same list of jobs, exactly as k workers would.
"""

from __future__ import annotations

import queue as queue_lib
import socket
import time
import traceback
from dataclasses import replace

from .backend import GroupSpec, PatchJob


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _member(rank: int, jobs: list[tuple[PatchJob, dict]], options: dict, threads: int, out) -> None:
    try:
        import torch

        if threads:
            torch.set_num_threads(threads)
        from .backends.diffusers_backend import DiffusersBackend

        if options.get("device") == "cuda":  # one GPU per member, as one worker per GPU
            options = {**options, "device": f"cuda:{rank % torch.cuda.device_count()}"}
        backend = DiffusersBackend(**options)
        results = []
        for job, overrides in jobs:
            if rank >= job.group.world_size:
                results.append(None)  # this member sits the job out (a smaller group of the first members)
                continue
            for name, value in overrides.items():
                setattr(backend, name, value)
            job = replace(job, group=replace(job.group, rank=rank))
            result = backend.run(job)
            results.append((result, backend.last_image.numpy()))  # numpy: pickled by value
        backend.release()
        out.put(("ok", rank, results))
    except BaseException:  # report every failure to the parent, which raises it
        out.put(("error", rank, traceback.format_exc()))


def group_spec(group_id: str, world_size: int, port: int | None = None) -> GroupSpec:
    return GroupSpec(group_id=group_id, members=tuple(f"local{r}" for r in range(world_size)), rank=0,
                     master_addr="127.0.0.1", master_port=port or free_port())


def run_local_group(world_size: int, jobs: list[PatchJob | tuple[PatchJob, dict]], options: dict, *,
                    threads: int = 1, timeout_s: float = 300.0) -> list[list]:
    """Run ``jobs`` (each optionally with backend attribute overrides, e.g. ``{"mode": "sync"}``) on
    ``world_size`` spawned members; a job for a smaller group runs on the first members only (the others
    skip it). Returns, per rank, a list with ``(PatchResult, image array)`` or None per job."""
    import torch.multiprocessing as mp

    jobs = [j if isinstance(j, tuple) else (j, {}) for j in jobs]
    for job, _ in jobs:
        if job.group.world_size > world_size:
            raise ValueError(f"job {job.task_id} is for {job.group.world_size} patches, the group has {world_size}")
    device = str(options.get("device", "cpu"))
    if device.startswith("cuda") and world_size > 1 and options.get("dist_backend", "nccl") == "nccl":
        import torch

        if torch.cuda.device_count() < world_size:
            raise ValueError(f"{world_size} patches on CUDA need {world_size} GPUs (NCCL cannot put two ranks on "
                             f"one GPU); this machine has {torch.cuda.device_count()}")
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_member, args=(r, jobs, options, threads, out), daemon=True) for r in range(world_size)]
    for p in procs:
        p.start()
    results: dict[int, list] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(results) < world_size:
            try:
                status, rank, payload = out.get(timeout=1.0)
            except queue_lib.Empty:
                dead = [r for r, p in enumerate(procs) if r not in results and p.exitcode is not None]
                if dead:
                    raise RuntimeError(f"patch group member {dead[0]} exited (code {procs[dead[0]].exitcode}) "
                                       "without a result") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"patch group of {world_size}: no answer within {timeout_s:.0f} s") from None
                continue
            if status != "ok":
                raise RuntimeError(f"patch group member {rank} failed:\n{payload}")
            results[rank] = payload
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join()
    return [results[r] for r in range(world_size)]
