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
def evaluate(
    grid: str = typer.Option("paper", help="paper (15 cells, Tables IX-XII) | small (2 cells)"),
    algos: str | None = typer.Option(None, help="comma-separated algorithms (default: the paper's + fifo, adaptive)"),
    seeds: int = typer.Option(10, help="held-out workload seeds K per cell"),
    out_dir: Path = typer.Option(Path("runs/evaluate"), "--out", help="output folder (resumable)"),
    jobs: int = typer.Option(max(1, os.cpu_count() or 1), help="worker processes"),
    checkpoints: Path | None = typer.Option(None, help="DIR with {algo}-n{nodes}.{pt|zip|npz} instead of the shipped"),
    logs: Path | None = typer.Option(None, help="training logs DIR/<algo>-n<nodes>/train_log.csv for Fig. 5"),
    optimal: int = typer.Option(0, help="also solve this many small instances exactly and print optimality gaps"),
):
    """Rerun the paper's evaluation grid: tables (md + csv), efficiency.png, optional training.png."""
    from .experiments.evaluate import DEFAULT_ALGOS, METRICS, EvalSettings, plot_training
    from .experiments.evaluate import evaluate as run

    names = tuple(a.strip().lower() for a in algos.split(",") if a.strip()) if algos else DEFAULT_ALGOS
    settings = EvalSettings(grid=grid, algos=names, seeds=seeds, jobs=jobs, checkpoints=checkpoints)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=False) as prog:
        bar = prog.add_task("cells", total=None)
        try:
            ev = run(settings, out_dir, warn=lambda m: err.print(f"[yellow]warning:[/] {m}"),
                     on_start=lambda n: prog.update(bar, total=n),
                     on_cell=lambda c, r, reused: prog.update(bar, advance=1, description=f"{c.key}"
                                                               + (" (stored)" if reused else "")))
        except ValueError as e:
            _fail(str(e))
    if logs is not None and not plot_training(logs, out_dir / "training.png"):
        err.print(f"[yellow]warning:[/] no {logs}/<algo>-n<nodes>/train_log.csv found; training.png not drawn")
    for metric in METRICS:
        out.print((out_dir / f"{metric}.md").read_text())
    if optimal > 0:
        from .experiments.optimal import gap_study, gap_table_markdown

        rows = gap_study(names, instances=optimal, warn=lambda m: err.print(f"[yellow]warning:[/] {m}"),
                         checkpoints=checkpoints)
        (out_dir / "optimality.md").write_text(gap_table_markdown(rows))
        out.print((out_dir / "optimality.md").read_text())
    out.print(f"{len(ev.records)} cells ({len(ev.computed)} computed, {len(ev.records) - len(ev.computed)} stored) "
              f"in {ev.wall_s:.1f} s -> {out_dir}")


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="an `eat evaluate --out` folder"),
    results_md: Path | None = typer.Option(None, help="also regenerate the measured section of this results doc"),
):
    """One Markdown and one HTML report (tables, plots, configuration) of an evaluation folder."""
    from .experiments.report import write_report

    try:
        md, html = write_report(run_dir, results_md=results_md)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    out.print(f"wrote {md} and {html}" + (f"; updated {results_md}" if results_md else ""))


@app.command()
def optimal(
    nodes: int = typer.Option(4, help="servers N"),
    tasks: int = typer.Option(6, help="tasks in the instance"),
    rate: float = typer.Option(0.05, help="Poisson arrival rate (tasks/s)"),
    seed: int = typer.Option(0, help="workload seed"),
    algos: str = typer.Option("random,fifo,greedy,adaptive", help="schedulers to compare"),
    node_limit: int = typer.Option(2_000_000, help="branch-and-bound node limit"),
    as_json: bool = typer.Option(False, "--json"),
):
    """Solve one small instance exactly (offline, arrivals known) and print every scheduler's gap."""
    from .experiments.optimal import compare_on_instance

    cfg = _config(nodes=nodes, rate=rate, tasks_per_episode=tasks)
    names = tuple(a.strip().lower() for a in algos.split(",") if a.strip())
    try:
        res = compare_on_instance(cfg, seed, names, node_limit=node_limit)
    except ValueError as e:
        _fail(str(e))
    if as_json:
        print(json.dumps(res))
        return
    t = Table(title=f"offline optimum vs schedulers: {nodes} nodes, {tasks} tasks, rate {rate}, seed {seed}")
    for col in ("scheduler", "objective R0", "gap R0 %", "mean response s", "vs min response %", "sim reward"):
        t.add_column(col, justify="right")
    for r in res["rows"]:
        t.add_row(r["name"], f"{r['objective']:.3f}", _fmt(r["gap_pct"]), f"{r['mean_response_s']:.2f}",
                  _fmt(r["response_excess_pct"]), _fmt(r.get("sim_reward", math.nan)))
    out.print(t)
    out.print(f"optimum: {res['status']} after {res['nodes_explored']:,} nodes, {res['solve_s']:.2f} s; "
              f"min mean response {res['min_mean_response_s']:.2f} s ({res['response_status']}); "
              f"response lower bound (relaxation) {res['response_lower_bound_s']:.2f} s")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
