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


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        _fail(f"{what}: {text!r} is not a comma-separated list of integers")
    if not values:
        _fail(f"{what}: empty")
    return values


@app.command()
def calibrate(
    model: str = typer.Option(..., help="diffusers model directory or a Hugging Face id in the local cache"),
    device: str = typer.Option("cpu", help="cpu | cuda (k patches use k GPUs)"),
    sizes: str = typer.Option("512", help="image sizes in px, comma-separated (one profile each)"),
    patches: str = typer.Option("1,2,4", help="patch counts to measure (must include 1)"),
    steps: str = typer.Option("4,12", help="two step counts s1,s2: step time = (exec(s2) - exec(s1)) / (s2 - s1)"),
    mode: str = typer.Option("stale", help="patch-parallel mode: stale | sync"),
    cuda_graph: bool = typer.Option(False, help="measure with CUDA-graph replay"),
    name: str | None = typer.Option(None, help="profile name"),
    out_path: Path = typer.Option(Path("profile.toml"), "--out", help="profile file (.toml or .json)"),
):
    """Measure step and init times per patch count on this machine and write a time profile."""
    from .gen.calibrate import CalibrateSettings, write_profiles
    from .gen.calibrate import calibrate as run

    step_pair = _ints(steps, "steps")
    if len(step_pair) != 2:
        _fail("steps: give exactly two step counts, e.g. 4,12")
    settings = CalibrateSettings(model=model, device=device, sizes=_ints(sizes, "sizes"),
                                 patches=_ints(patches, "patches"), steps=step_pair, mode=mode,
                                 cuda_graph=cuda_graph, name=name)
    total = len(settings.sizes) * len(settings.patches)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as prog:
        bar = prog.add_task("calibrating", total=total)

        def done(size, k, m):
            err.print(f"{size} px, k={k}: init {m['init_s']:.2f} s, {m['step_s'] * 1000:.1f} ms/step")
            prog.advance(bar)

        try:
            profiles = run(settings, on_done=done)
            paths = write_profiles(profiles, out_path)
        except (ValueError, FileNotFoundError, RuntimeError, TimeoutError) as e:
            _fail(str(e))
    for p in paths:
        out.print(f"wrote {p} (use it with: eat simulate --profile {p})")


@bench_app.command("gen")
def bench_gen(
    device: str = typer.Option("cpu", help="cpu (tiny UNet) | cuda (SD 1.4-shaped UNet, fp16)"),
    size: int | None = typer.Option(None, help="image px (default 512 on CUDA, 64 on CPU)"),
    iters: int = typer.Option(20, help="timed steps per variant"),
    as_json: bool = typer.Option(False, "--json"),
):
    """Per-step ms of a UNet denoising step: eager, ours (CUDA graph) and the graph-replay floor."""
    from .gen.bench import BenchSettings, run_bench

    try:
        r = run_bench(BenchSettings(device=device, size=size, iters=iters))
    except ValueError as e:
        _fail(str(e))
    if as_json:
        print(json.dumps(r))
        return
    t = Table(title=f"UNet step, {r['size_px']} px, CFG batch 2, {r['dtype']}, {r['device']} ({r['unet_params_m']}M)")
    for col in ("variant", "ms/step", "x floor"):
        t.add_column(col, justify="right")
    floor = r.get("floor_ms")
    for v in ("eager", "ours", "floor"):
        if f"{v}_ms" in r:
            t.add_row(v, f"{r[f'{v}_ms']:.2f}", f"{r[f'{v}_ms'] / floor:.2f}x" if floor else "-")
    out.print(t)
    if "note" in r:
        out.print(r["note"])


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
