"""The ``eat`` command."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .core.config import ConfigError, EATConfig
from .core.profiles import ProfileError, builtin_profiles, get_profile

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="EAT: QoS-aware patch-parallel AIGC task scheduling on edge GPU clusters.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print numbers and ratios.")
app.add_typer(bench_app, name="bench")

err = Console(stderr=True)
out = Console()


def _fail(msg: str) -> None:
    err.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(2)


def _config(**kw) -> EATConfig:
    try:
        return EATConfig(**{k: v for k, v in kw.items() if v is not None})
    except (ConfigError, ProfileError) as e:
        _fail(str(e))
        raise  # unreachable


def _fmt(x) -> str:
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.4g}"
    return str(x)


@app.command()
def simulate(
    policy: str = typer.Option("adaptive", help="random | greedy | fifo | adaptive | eat | ..."),
    checkpoint: str | None = typer.Option(None, help="checkpoint of a learned policy"),
    nodes: int = typer.Option(8, help="servers N"),
    rate: float = typer.Option(0.1, help="Poisson arrival rate (tasks/s)"),
    episodes: int = typer.Option(20, help="episodes K (workload seeds seed..seed+K-1)"),
    seed: int = typer.Option(0, help="first workload seed"),
    profile: str = typer.Option("reference", help=f"time profile: {', '.join(builtin_profiles())} or a file"),
    mode: str = typer.Option("tick", help="tick | event"),
    arrival: str = typer.Option("poisson", help="poisson | bursty | trace"),
    trace: str | None = typer.Option(None, help="CSV trace for --arrival trace"),
    out_dir: Path | None = typer.Option(None, "--out", help="write tasks.csv and summary.json here"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
):
    """Run a scheduler for K episodes in the simulator and report the paper's metrics."""
    from .algos import make_policy
    from .core.metrics import write_task_csv
    from .experiments.simulate import simulate as run

    if episodes < 1:
        _fail("episodes: must be >= 1")
    cfg = _config(nodes=nodes, rate=rate, profile=profile, mode=mode, arrival=arrival, trace_path=trace)
    try:
        pol = make_policy(policy, cfg, checkpoint=checkpoint, seed=seed)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    show = not as_json and sys.stderr.isatty() or os.environ.get("EAT_PROGRESS") == "1"
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, disable=not show, transient=True) as prog:
        bar = prog.add_task(f"{policy} N={nodes} rate={rate}", total=episodes)
        res = run(pol, cfg, episodes, seed, on_episode=lambda e, m: prog.advance(bar))
    summary = res.summary()
    if out_dir is not None:
        write_task_csv(out_dir / "tasks.csv", res.tasks)
        (out_dir / "summary.json").write_text(json.dumps({"summary": summary, "config": cfg.to_dict(),
                                                          "episodes": res.episodes}, indent=1, default=str))
    if as_json:
        print(json.dumps(summary))
        return
    t = Table(title=f"{policy} on {nodes} nodes, rate {rate}/s, {episodes} episodes (profile {cfg.time_profile.name})")
    for col in ("metric", "value"):
        t.add_column(col)
    for k, v in summary.items():
        t.add_row(k, _fmt(v))
    out.print(t)
    if out_dir is not None:
        out.print(f"per-task log: {out_dir / 'tasks.csv'}")


@app.command()
def profiles(name: str | None = typer.Argument(None, help="show one profile (name or file)")):
    """List the time-model profiles (seconds per step and init seconds per patch count)."""
    names = [name] if name else list(builtin_profiles())
    t = Table(title="time profiles (speed-1.0 server)")
    for col in ("profile", "k", "s/step", "init s", "description"):
        t.add_column(col)
    for n in names:
        try:
            p = get_profile(n)
        except ProfileError as e:
            _fail(str(e))
        for i, k in enumerate(p.patch_counts):
            t.add_row(p.name if i == 0 else "", str(k), f"{p.step_time[k]:.4g}", f"{p.init_time[k]:.4g}",
                      p.description if i == 0 else "")
    out.print(t)


@bench_app.command("env")
def bench_env(
    seconds: float = typer.Option(3.0, help="seconds per measurement"),
    nodes: int = typer.Option(8),
    rate: float = typer.Option(0.1),
    as_json: bool = typer.Option(False, "--json"),
):
    """Steps/s of the single env and env-steps/s of the batched env (256 and 1024 envs), random actions."""
    from .experiments.bench import bench_batched, bench_single

    cfg = _config(nodes=nodes, rate=rate)
    rows = [bench_single(cfg, seconds)] + [bench_batched(cfg, n, seconds) for n in (256, 1024)]
    if as_json:
        print(json.dumps({"nodes": nodes, "rate": rate, "cpus": os.cpu_count(), "results": rows}))
        return
    t = Table(title=f"simulator throughput, {nodes} nodes, rate {rate}, random actions, {os.cpu_count()} CPUs")
    for col in ("env", "steps/s", "x authors' 21k/s"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(r["env"], f"{r['steps_per_s']:,.0f}", f"{r['ratio_vs_authors']:.1f}x")
    out.print(t)


@app.command()
def train(
    algo: str = typer.Option(..., help="eat | eat-a | eat-d | eat-da | lad-ts | ppo | genetic | harmony"),
    nodes: int = typer.Option(8, help="servers N"),
    rate: float = typer.Option(0.1, help="Poisson arrival rate (tasks/s)"),
    steps: int | None = typer.Option(None, help="budget in env steps (default: the algorithm's own)"),
    minutes: float | None = typer.Option(None, help="budget in wall-clock minutes (instead of --steps)"),
    seed: int = typer.Option(0, help="seed of networks, exploration and training workloads"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    utd: float | None = typer.Option(None, help="SAC: gradient updates per env step"),
    envs: int | None = typer.Option(None, help="SAC: environments collected per policy forward"),
    profile: str = typer.Option("reference", help="time profile"),
    resume: bool = typer.Option(False, help="continue the run in --out from its train_state.pt"),
    out_dir: Path = typer.Option(..., "--out", help="output folder (policy.pt, logs, tb/)"),
):
    """Train a learned scheduler; writes the checkpoint, train_log.csv, eval_log.csv and TensorBoard logs."""
    from .experiments.train import train as run

    if steps is not None and minutes is not None:
        _fail("give --steps or --minutes, not both")
    if (steps is not None and steps < 1) or (minutes is not None and minutes <= 0):
        _fail("the budget must be positive")
    cfg = _config(nodes=nodes, rate=rate, profile=profile)
    extra = {k: v for k, v in {"utd": utd, "num_envs": envs}.items() if v is not None}
    try:
        path = run(algo, cfg, out_dir, steps=steps, minutes=minutes, seed=seed, device=device,
                   progress=sys.stderr.isatty() or os.environ.get("EAT_PROGRESS") == "1", resume=resume, **extra)
    except (ValueError, FileNotFoundError, ImportError) as e:
        _fail(str(e))
    from .algos.learned import read_checkpoint

    label = read_checkpoint(path).get("label", "") if path.suffix == ".pt" else ""
    out.print(f"checkpoint: {path}" + (f" ({label})" if label else ""))


@bench_app.command("train")
def bench_train(
    seconds: float = typer.Option(5.0, help="seconds per measurement"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    nodes: int = typer.Option(8),
    as_json: bool = typer.Option(False, "--json"),
):
    """Gradient updates/s of EAT and EAT-DA at batch 512, FLOPs per update, fraction of the measured matmul rate,
    and env-steps/s while training."""
    import torch

    from .experiments.bench_learn import bench_update, matmul_rate

    if device.startswith("cuda") and not torch.cuda.is_available():
        err.print("[yellow]CUDA is not available here; measuring on the CPU instead[/]")
        device = "cpu"
    cfg = _config(nodes=nodes, rate=0.1)
    peak = matmul_rate(device, seconds=min(2.0, seconds))
    rows = [bench_update(a, cfg, device, seconds, peak_gflops=peak) for a in ("eat", "eat-da")]
    if device.startswith("cuda"):
        rows += [bench_update(a, cfg, device, seconds, graph=False, peak_gflops=peak) for a in ("eat",)]
    if as_json:
        print(json.dumps({"device": device, "threads": torch.get_num_threads(), "matmul_gflops": peak,
                          "results": rows}))
        return
    t = Table(title=f"SAC update throughput on {device} ({torch.get_num_threads()} threads), batch 512; "
                    f"fp32 matmul ceiling {peak:,.0f} GFLOP/s")
    for col in ("algo", "graph", "updates/s", "GFLOP/update", "GFLOP/s", "of ceiling", "x authors",
                "env-steps/s training"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(r["algo"], str(r["graph"]), f"{r['updates_per_s']:.1f}", f"{r['gflop_per_update']:.2f}",
                  f"{r['achieved_gflops']:.0f}", f"{r['fraction_of_matmul']:.0%}", f"{r['x_authors']:.1f}x",
                  f"{r['env_steps_per_s_training']:,.0f}")
    out.print(t)


@bench_app.command("decide")
def bench_decide(
    decisions: int = typer.Option(2000, help="decisions timed per policy"),
    nodes: int = typer.Option(8),
    as_json: bool = typer.Option(False, "--json"),
):
    """p50/p99 single-decision latency (batch 1, CPU) of every policy."""
    from .experiments.bench_learn import bench_decide as run

    rows = run(_config(nodes=nodes, rate=0.1), decisions)
    if as_json:
        print(json.dumps({"nodes": nodes, "results": rows}))
        return
    t = Table(title=f"single-decision latency, {nodes} nodes, batch 1, CPU")
    for col in ("policy", "weights", "p50 ms", "p99 ms"):
        t.add_column(col, justify="right")
    for r in rows:
        if "note" in r:
            t.add_row(r["policy"], r["note"], "", "")
        else:
            t.add_row(r["policy"], r["label"], f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}")
    out.print(t)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
