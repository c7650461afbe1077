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

def _console(stderr: bool = False) -> Console:
    """Rich console; when the stream is not a terminal (a pipe, a log file) and COLUMNS is unset, 160 columns
    instead of Rich's 80, so that the wide benchmark tables are not folded."""
    stream = sys.stderr if stderr else sys.stdout
    piped = not (hasattr(stream, "isatty") and stream.isatty()) and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=160 if piped else None)


err = _console(stderr=True)
out = _console()


def _fail(msg: str) -> None:
    """The one-line error of every command (never wrapped, markup in ``msg`` printed as is), exit code 2."""
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(' '.join(str(msg).split()))}", soft_wrap=True)
    raise typer.Exit(2)


def _option_error(e: ConfigError) -> str:
    """A config error in the words of the command line: ``trace_path: ...`` -> ``--trace: ...``."""
    option = _OWN_OPTIONS.get(getattr(e, "field", ""))
    if option is None:
        return str(e)
    import re

    text = str(e).split(": ", 1)[-1]
    for field, opt in _OWN_OPTIONS.items():  # "when arrival='trace'" -> "with --arrival trace"
        text = re.sub(rf"(?:when )?\b{field}='?([\w.-]+)'?", rf"with {opt} \1", text)
    return f"{option} {text}" if text.startswith("is required") else f"{option}: {text}"


def _config(**kw) -> EATConfig:
    try:
        return EATConfig(**{k: v for k, v in kw.items() if v is not None})
    except ConfigError as e:
        _fail(_option_error(e))
        raise  # unreachable
    except ProfileError as e:
        _fail(str(e))
        raise  # unreachable


_SET_HELP = "any other EATConfig field as KEY=VALUE, repeatable (e.g. --set r_max=1e9 --set w_q=20)"
_OWN_OPTIONS = {"nodes": "--nodes", "rate": "--rate", "profile": "--profile", "mode": "--mode",
                "arrival": "--arrival", "trace_path": "--trace"}


def _settings(items: list[str]) -> dict:
    """``--set`` values as config fields (fields with their own option are refused, so there is one way)."""
    from .core.config import parse_field_values

    try:
        return parse_field_values(EATConfig, items, "--set", "configuration field", reserved=_OWN_OPTIONS)
    except ConfigError as e:
        _fail(str(e))
        raise  # unreachable


def _algo_names(**kw) -> tuple[str, ...]:
    """Scheduler names from the registry (``learned=True``: the trainable ones)."""
    from .algos.registry import names

    return names(**kw)


_ALGOS_HELP = " | ".join(_algo_names())


def _rates(text: str) -> dict:
    """``--rate`` as config fields: ``0.1``, ``0.05:0.6`` (a range) or ``0.1,0.25,0.5`` (choices)."""
    try:
        if ":" in text:
            lo, hi = (float(v) for v in text.split(":"))
            return {"rate": lo, "rate_max": hi}
        if "," in text:
            values = tuple(float(v) for v in text.split(",") if v.strip())
            return {"rate": min(values), "rate_choices": values}
        return {"rate": float(text)}
    except ValueError:
        _fail(f"--rate: expected a number, LO:HI or A,B,C (tasks/s), got {text!r}")
        raise  # unreachable


def _fmt(x) -> str:
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.4g}"
    return str(x)


def _print_metrics(title: str, summary: dict) -> None:
    """A run's metrics, one row each: what it is with its unit and direction, the value, the JSON field name;
    then the definition of efficiency and of the units."""
    from .core.metrics import EFFICIENCY_DEFINITION, METRIC_INFO, metric_label

    t = Table(title=title)
    for col in ("metric (unit, direction)", "value", "JSON field"):
        t.add_column(col, justify="right" if col == "value" else "left")
    for k, v in summary.items():
        if k in METRIC_INFO:
            t.add_row(metric_label(k), "-" if isinstance(v, float) and math.isnan(v) else _fmt(v), k)
    out.print(t)
    blank = any(isinstance(v, float) and math.isnan(v) for k, v in summary.items() if k in METRIC_INFO)
    out.print(f"{EFFICIENCY_DEFINITION}; model s: the simulator's clock; wall ms: measured here"
              + ("; -: no task finished" if blank else ""))


def _trace_tasks(cfg: EATConfig) -> int | None:
    """Tasks in ``--trace`` (None unless ``--arrival trace``); a bad trace is a one-line error naming ``--trace``."""
    if cfg.arrival != "trace":
        return None
    from .core.workload import read_trace

    try:
        return len(read_trace(Path(cfg.trace_path), cfg))
    except ConfigError as e:
        _fail(_option_error(e))
        raise  # unreachable


def _workload_text(cfg: EATConfig, trace_tasks: int | None, episodes: int | None) -> str:
    """Where the tasks came from, for titles: the rate does not apply to a trace, the replays do (``episodes``
    None: one episode's picture, no count)."""
    if trace_tasks is not None:
        if episodes is None:
            return f"trace {cfg.trace_path} ({trace_tasks} tasks)"
        times = "once" if episodes == 1 else f"in each of {episodes} episodes"
        return f"trace {cfg.trace_path} ({trace_tasks} tasks) replayed {times}"
    kind = "Poisson arrivals" if cfg.arrival == "poisson" else f"{cfg.arrival} arrivals, mean"
    if episodes is None:
        return f"{kind} {cfg.rate:g} tasks/s"
    n = f"{episodes} episodes" if episodes != 1 else "1 episode"
    return f"{kind} {cfg.rate:g} tasks/s, {n} of {cfg.tasks_per_episode} tasks"


_PRESET_HELP = ("spec | authors: the authors' simulator, every SPEC fix undone (docs/fidelity.md); --set turns single "
                "switches back, e.g. --set selector=least-fragmentation")


def _preset(name: str, **fields) -> dict:
    """Config fields of ``--preset NAME`` with the given fields on top (None: not given, the preset's value stays);
    an unknown preset is a one-line error naming the allowed ones."""
    from .core.config import PRESETS

    if name not in PRESETS:
        _fail(f"--preset: unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return {**PRESETS[name], **{k: v for k, v in fields.items() if v is not None}}


@app.command()
def simulate(
    policy: str = typer.Option("adaptive", help=f"one of: {_ALGOS_HELP}"),
    checkpoint: str | None = typer.Option(None, help="checkpoint of a learned policy"),
    nodes: int = typer.Option(8, help="servers N"),
    rate: float = typer.Option(0.1, help="Poisson arrival rate (tasks/s)"),
    episodes: int = typer.Option(20, help="episodes K (workload seeds seed..seed+K-1)"),
    seed: int = typer.Option(0, help="first workload seed"),
    profile: str = typer.Option("reference", help=f"time profile: {', '.join(builtin_profiles())} or a file"),
    mode: str | None = typer.Option(None, help="tick | event | grid (default: tick; --preset authors: grid)"),
    arrival: str = typer.Option("poisson", help="poisson | bursty | trace"),
    trace: str | None = typer.Option(None, help="CSV trace for --arrival trace (replayed until every task finished)"),
    out_dir: Path | None = typer.Option(None, "--out", help="write tasks.csv and summary.json here"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
    settings: list[str] = typer.Option([], "--set", help=_SET_HELP),
    preset: str = typer.Option("spec", help=_PRESET_HELP),
    steps: int | None = typer.Option(None, help="steps of every launch, for the fixed-step schedulers fifo | hol | "
                                                "adaptive | patient"),
):
    """Run a scheduler for K episodes in the simulator and report the paper's metrics."""
    from .algos import make_policy
    from .core.metrics import write_task_csv
    from .sim.rollout import simulate as run

    if episodes < 1:
        _fail("--episodes: must be >= 1")
    if trace is not None and arrival != "trace":
        _fail("--trace FILE is read only with --arrival trace")
    fields = _settings(settings)
    cfg = _config(**_preset(preset, nodes=nodes, rate=rate, profile=profile, mode=mode, arrival=arrival,
                            trace_path=trace, **fields))
    trace_tasks = _trace_tasks(cfg)  # the trace is checked before anything runs
    if trace_tasks is not None and "time_limit" not in fields:  # a replay runs until every task finished
        from .core.workload import read_trace, trace_horizon

        cfg = cfg.replace(time_limit=trace_horizon(cfg, read_trace(Path(cfg.trace_path), cfg)))
    try:
        if steps is not None:
            from .algos.heuristics import with_steps

            if checkpoint:
                _fail(f"--steps: {policy} with --steps is hand-written and takes no --checkpoint")
            pol = with_steps(policy.lower(), cfg, steps, seed=seed)
        else:
            pol = make_policy(policy, cfg, checkpoint=checkpoint, seed=seed)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    from .algos.registry import outside_training

    warning = outside_training(pol, cfg)
    if warning:
        err.print(f"[yellow]warning:[/] {warning}")
    show = not as_json and sys.stderr.isatty() or os.environ.get("EAT_PROGRESS") == "1"
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, disable=not show, transient=True) as prog:
        short = f"trace {Path(cfg.trace_path).name}" if trace_tasks is not None else f"rate={rate}"
        bar = prog.add_task(f"{policy} N={nodes} {short}", total=episodes)
        res = run(pol, cfg, episodes, seed, on_episode=lambda e, m: prog.advance(bar))
    summary = res.summary()
    if trace_tasks is not None:  # the rate does not apply; say what was replayed (new keys, old ones unchanged)
        summary |= {"trace": cfg.trace_path, "trace_tasks": trace_tasks, "trace_replays": episodes,
                    "time_limit_s": cfg.time_limit, "time_limit_given": "time_limit" in fields}
    if preset != "spec":
        summary["preset"] = preset
    if out_dir is not None:
        from .sim.timeline import draw_timeline

        write_task_csv(out_dir / "tasks.csv", res.tasks)
        (out_dir / "summary.json").write_text(json.dumps({"summary": summary, "config": cfg.to_dict(),
                                                          "episodes": res.episodes}, indent=1, default=str))
        draw_timeline(res.task_records[0], nodes=cfg.nodes, path=out_dir / "timeline.png",
                      title=f"{policy} on {nodes} nodes, {_workload_text(cfg, trace_tasks, None)}: episode 1 of "
                            f"{episodes} (seed {seed}, {len(res.task_records[0])} tasks)")
    if as_json:
        print(json.dumps(summary))
        return
    _print_metrics(f"{policy} on {nodes} nodes, {_workload_text(cfg, trace_tasks, episodes)}; "
                   f"{summary['tasks']} tasks in all (profile {cfg.time_profile.name}"
                   + (f", preset {preset})" if preset != "spec" else ")"), summary)
    if trace_tasks is not None:
        until = (f"until every task finished (or {cfg.time_limit:,.0f} model s, set with --set time_limit=S)"
                 if "time_limit" in fields else "until every task finished (no time limit short of "
                 f"{cfg.time_limit:,.0f} model s, by which even one task at a time would have finished)")
        out.print(f"trace replay: the {trace_tasks} tasks of {cfg.trace_path}, "
                  f"{'once' if episodes == 1 else f'{episodes} times (once per episode)'}, each {until}; "
                  f"{summary['tasks_completed']} of {summary['tasks']} finished")
    if out_dir is not None:
        out.print(f"per-task log: {out_dir / 'tasks.csv'}; schedule of episode 1: {out_dir / 'timeline.png'}")


@app.command()
def profiles(name: str | None = typer.Argument(None, help="show one profile (name or file)")):
    """List the time-model profiles (seconds per step and init seconds per patch count)."""
    names = [name] if name else list(builtin_profiles())
    t = Table(title="time profiles (speed-1.0 server; model s: the simulator's clock)")
    for col in ("profile", "k (patches)", "model s / step", "init (model s)", "description"):
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
    from .bench.env import bench_batched, bench_single

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
    from .bench.gen import BenchSettings, run_bench

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


# --- serving (issue 5) -------------------------------------------------------------------------------------
@app.command()
def serve(
    bind: str = typer.Option("127.0.0.1", "--bind", help="address to listen on"),
    port: int = typer.Option(8000, help="port to listen on"),
    data_dir: Path = typer.Option(Path("eat-data"), "--data-dir", help="SQLite store and images live here"),
    nodes: int = typer.Option(8, help="servers N the policy schedules (worker slots)"),
    policy: str = typer.Option("eat", help="eat (else adaptive, with a warning) | adaptive | greedy | fifo"),
    checkpoint: str | None = typer.Option(None, help="checkpoint of a learned policy"),
    profile: str = typer.Option("reference", help="time profile the online predictor starts from"),
    time_scale: float = typer.Option(1.0, "--time-scale", help="wall seconds per model second (the workers' value)"),
    model: list[str] = typer.Option(["sd-v1-4"], "--model", help="model names served (repeat; first is default)"),
    token: str | None = typer.Option(None, envvar="EAT_TOKEN",
                                     help="clients' bearer token: to submit, cancel and (unless --public-read) read"),
    worker_token: str | None = typer.Option(None, "--worker-token", envvar="EAT_WORKER_TOKEN",
                                            help="workers' bearer token (default: --token, with a warning)"),
    public_read: bool = typer.Option(False, "--public-read", help="reads need no token (demos; addresses hidden)"),
    forwarded_allow_ips: str | None = typer.Option(
        None, "--forwarded-allow-ips", help="proxies whose X-Forwarded-For names the client (default: none; the "
                                            "rate limit keys on the peer address)"),
    heartbeat_timeout: float = typer.Option(5.0, "--heartbeat-timeout", help="seconds before a silent worker is down"),
    heartbeat: float = typer.Option(1.0, "--heartbeat", help="seconds between worker heartbeats"),
    rate_limit: float = typer.Option(50.0, "--rate-limit", help="submissions/s per client (0: no limit)"),
    rate_burst: int = typer.Option(200, "--rate-burst", help="submissions a client may make at once"),
    deadline_factor: float = typer.Option(
        10.0, "--deadline-factor", help="an attempt is abandoned and re-queued after this many times its predicted "
                                        "init + exec time ..."),
    deadline_min: float = typer.Option(30.0, "--deadline-min", help="... but not before this many seconds"),
    log_level: str = typer.Option("info", "--log-level"),
):
    """Run the host: HTTP API (docs at /docs), durable queue, scheduling loop, web page at /."""
    import logging

    from .serving.api import run_host
    from .serving.settings import HostSettings

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        s = HostSettings(bind=bind, port=port, data_dir=str(data_dir), nodes=nodes, policy=policy,
                         checkpoint=checkpoint, profile=profile, time_scale=time_scale, models=tuple(model),
                         token=token, worker_token=worker_token, public_read=public_read,
                         forwarded_allow_ips=forwarded_allow_ips, heartbeat_s=heartbeat,
                         heartbeat_timeout_s=heartbeat_timeout, rate_limit=rate_limit, rate_burst=rate_burst,
                         job_deadline_factor=deadline_factor, job_deadline_min_s=deadline_min)
        err.print(f"eat serve: http://{bind}:{port}/  (API docs /docs, data in {data_dir})")
        run_host(s, log_level=log_level.lower())
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))


@app.command()
def worker(
    host: str = typer.Option("http://127.0.0.1:8000", help="URL of the host"),
    backend: str = typer.Option("simulated", help="simulated | diffusers"),
    worker_id: str | None = typer.Option(None, "--id", help="worker name (default hostname-pid)"),
    port: int = typer.Option(0, help="torch.distributed rendezvous port when rank 0 (0: a free port)"),
    speed: float = typer.Option(1.0, help="speed factor of this server"),
    time_scale: float = typer.Option(1.0, "--time-scale", help="simulated backend: wall seconds per model second"),
    profile: str = typer.Option("reference", help="simulated backend: time profile"),
    model: str | None = typer.Option(None, help="diffusers backend: model id or path"),
    device: str | None = typer.Option(None, help="diffusers backend: device (cpu, cuda:0, ...)"),
    mode: str | None = typer.Option(None, help="diffusers backend: patch parallelism stale (default) | sync"),
    warmup_steps: int | None = typer.Option(None, "--warmup-steps", help="diffusers backend: synchronous steps first"),
    cuda_graph: bool | None = typer.Option(None, "--cuda-graph/--no-cuda-graph", help="diffusers backend: CUDA graphs"),
    clip_model: str | None = typer.Option(None, "--clip-model", help="diffusers backend: CLIP model dir for scores"),
    threads: int | None = typer.Option(None, help="diffusers backend: CPU threads (1 each for workers sharing a CPU)"),
    token: str | None = typer.Option(None, "--token", "--worker-token", envvar=["EAT_WORKER_TOKEN", "EAT_TOKEN"],
                                     help="the host's worker token (eat serve --worker-token)"),
    log_level: str = typer.Option("warning", "--log-level"),
):
    """Run an edge worker that takes patch jobs from the host."""
    import logging
    import signal

    from .gen.backends import make_backend
    from .serving.worker import Worker, WorkerSettings

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        opts = ({"profile": profile, "time_scale": time_scale, "speed": speed} if backend == "simulated"
                else {"model": model, "device": device, "mode": mode, "warmup_steps": warmup_steps,
                      "cuda_graph": cuda_graph, "clip_model": clip_model, "threads": threads})
        be = make_backend(backend, **opts)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    w = Worker(WorkerSettings(host=host, worker_id=worker_id, speed=speed, port=port, token=token), be)

    def _terminate(*_):
        w.stop()
        raise KeyboardInterrupt  # also breaks a long poll in progress

    signal.signal(signal.SIGTERM, _terminate)
    try:
        w.serve_forever()
    except KeyboardInterrupt:
        w.stop()
    except (PermissionError, RuntimeError) as e:
        _fail(str(e))


@app.command()
def submit(
    prompt: str = typer.Argument(..., help="what to draw"),
    patches: int = typer.Option(1, help="k: patches (servers) the image is split into"),
    host: str = typer.Option("http://127.0.0.1:8000", help="URL of the host"),
    model: str | None = typer.Option(None, help="model name (default: the host's first)"),
    seed: int | None = typer.Option(None, help="random seed"),
    negative_prompt: str | None = typer.Option(None, "--negative-prompt"),
    wait: bool = typer.Option(False, "--wait", help="wait until the task finished"),
    out_file: Path | None = typer.Option(None, "--out", help="with --wait: save the image here"),
    token: str | None = typer.Option(None, envvar="EAT_TOKEN", help="bearer token of the host"),
    as_json: bool = typer.Option(False, "--json", help="print the task as JSON"),
):
    """Submit one prompt to a running host (thin client). Times are wall seconds (model s = wall s / the host's time
    scale); with --wait it says on stderr why the task waits (e.g. "needs 4 servers, 3 up") whenever that changes."""
    import httpx

    from .serving.client import TERMINAL, Client, HostError

    reason = None

    def waiting(why: str) -> None:
        nonlocal reason
        reason = why
        err.print(f"waiting: {why}", highlight=False, soft_wrap=True)

    try:
        with Client(host, token=token) as c:
            task_id = c.submit(prompt, patches=patches, model=model, seed=seed, negative_prompt=negative_prompt)
            task = c.wait(task_id, on_wait=waiting) if wait else c.task(task_id)
            if wait and out_file is not None and task["state"] == "finished":
                out_file.write_bytes(c.image(task_id))
            scale = c.cluster()["time_scale"]
    except HostError as e:
        _fail(str(e))
    except httpx.TransportError as e:
        _fail(f"cannot reach the host at {host}: {e}")
    if as_json:  # the host's fields (times in wall s) plus the unit and the time scale to convert them
        extra = {"time_unit": "wall s", "time_scale": scale}
        if task.get("response_s") is not None:
            extra["response_wall_s"] = task["response_s"]
            extra["response_model_s"] = task["response_s"] / scale
        print(json.dumps(task | extra))
        return
    out.print(f"task {task['id']}: {task['state']}")
    if task["state"] == "finished":
        out.print(f"  steps {task['steps']} on {' '.join(task['servers'])}, response {task['response_s']:.2f} wall s"
                  f" (wait {task['wait_s']:.2f}, init {task['init_s']:.2f}, exec {task['exec_s']:.2f} wall s;"
                  f" = {task['response_s'] / scale:.1f} model s at time scale {scale:g})", highlight=False)
        out.print(f"  image: {host.rstrip('/')}{task['image_url']}" + (f" -> {out_file}" if out_file else ""))
    elif wait and task["state"] not in TERMINAL:
        out.print(f"  gave up waiting; last reason: {reason or 'none given'}", highlight=False)


@app.command()
def demo(
    tasks: int = typer.Option(64, help="tasks per episode"),
    nodes: int = typer.Option(8, help="simulated workers"),
    rate: float = typer.Option(0.5, help="arrival rate, tasks per model second"),
    time_scale: float = typer.Option(0.1, "--time-scale", help="wall seconds per model second"),
    policy: str = typer.Option("eat", help="policy under test (eat falls back to adaptive, named as such)"),
    baseline: str = typer.Option("adaptive", help="policy to compare with"),
    seed: int = typer.Option(0, help="workload seed"),
    out_dir: Path = typer.Option(Path("runs/demo-serve"), "--out", help="data dirs, images and logs go here"),
    as_json: bool = typer.Option(False, "--json", help="print the metrics as JSON at the end"),
):
    """Serving system end to end: a host + simulated workers on loopback, real prompts, EAT vs a baseline.
    Waits until each host is ready (policy warmed up), then prints a live view (plain lines off a terminal), a metrics
    table (model s and wall s labelled, with directions) and writes OUT/timeline.png, the schedule of both."""
    import signal

    from .serving.demo import DemoSettings, run_demo

    if tasks < 1 or nodes < 1 or not rate > 0 or not time_scale > 0:
        _fail("tasks and nodes must be >= 1, rate and time scale > 0")

    def _interrupt(*_):
        raise KeyboardInterrupt  # SIGTERM too: the host and workers are stopped on the way out

    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        rows = run_demo(DemoSettings(nodes=nodes, tasks=tasks, rate=rate, time_scale=time_scale, policy=policy,
                                     baseline=baseline, seed=seed, out=out_dir), console=err if as_json else out)
    except (RuntimeError, TimeoutError) as e:  # a host that did not start, or an episode that got stuck
        _fail(str(e))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if as_json:
        print(json.dumps(rows))


@bench_app.command("serve")
def bench_serve(
    tasks: int = typer.Option(2000, help="tasks POSTed in the admission run"),
    concurrency: int = typer.Option(32, help="requests in flight"),
    decisions: int = typer.Option(2000, help="scheduling decisions timed"),
    policy: str = typer.Option("eat", help="policy on the decide path (eat falls back to adaptive)"),
    as_json: bool = typer.Option(False, "--json"),
):
    """Host admission throughput (tasks/s accepted over HTTP) and time per scheduling decision (p50/p99 ms)."""
    from .bench.serve import bench_admission, bench_decisions

    adm = bench_admission(tasks, concurrency)
    dec = bench_decisions(decisions, policy=policy)
    if as_json:
        print(json.dumps({"cpus": os.cpu_count(), "admission": adm, "decisions": dec}))
        return
    t = Table(title=f"serving host on {os.cpu_count()} CPUs")
    for col in ("measure", "value", "target", "ratio"):
        t.add_column(col, justify="right")
    t.add_row(f"admitted tasks/s ({concurrency} in flight, SQLite commit each)", f"{adm['tasks_per_s']:,.0f}",
              f">= {adm['target_tasks_per_s']:.0f}", f"{adm['ratio_vs_target']:.2f}x")
    t.add_row(f"decide p50 / p99 ms ({dec['policy']})", f"{dec['decide_p50_ms']:.3f} / {dec['decide_p99_ms']:.3f}",
              f"p50 <= {dec['target_p50_ms']:.1f}", f"{dec['target_p50_ms'] / dec['decide_p50_ms']:.1f}x under")
    t.add_row("decide + dispatch p50 / p99 ms (incl. SQLite)",
              f"{dec['decide_dispatch_p50_ms']:.3f} / {dec['decide_dispatch_p99_ms']:.3f}",
              f"p50 <= {dec['target_p50_ms']:.1f}",
              f"{dec['target_p50_ms'] / dec['decide_dispatch_p50_ms']:.1f}x under")
    out.print(t)

@app.command()
def evaluate(
    grid: str = typer.Option("paper", help="paper (15 cells, Tables IX-XII) | small (2 cells) | heavy (4 x 0.25, "
                                           "8 x 0.5, 12 x 0.75) | dedgeai (LAD-TS on its own offloading problem: "
                                           "eat offload-study --setting reduced)"),
    algos: str | None = typer.Option(None, help="comma-separated algorithms (default: the paper's + fifo, adaptive)"),
    seeds: int = typer.Option(10, help="held-out workload seeds K per cell"),
    out_dir: Path = typer.Option(Path("runs/evaluate"), "--out", help="output folder (resumable)"),
    jobs: int = typer.Option(max(1, os.cpu_count() or 1), help="worker processes"),
    checkpoints: Path | None = typer.Option(None, help="DIR with {algo}-n{nodes}.{pt|zip|npz} instead of the shipped"),
    logs: Path | None = typer.Option(None, help="training logs DIR/<algo>-n<nodes>/train_log.csv for Fig. 5"),
    optimal: int = typer.Option(0, help="also solve this many instances of 4 nodes / 12 tasks and of 8 nodes / 8 tasks "
                                        "with CP-SAT and print every scheduler's gap (docs/optimal.md)"),
    optimal_time: float = typer.Option(60.0, "--optimal-time", help="CP-SAT seconds per solve (two per instance)"),
    preset: str = typer.Option("spec", help="spec | authors: the setting every cell runs in (docs/fidelity.md)"),
    ablation: bool = typer.Option(False, "--ablation", help="from --preset authors, each SPEC fix alone, then SPEC: "
                                                            "one grid each under OUT/variants/, OUT/ablation.md with "
                                                            "the verdict on the paper's claims (eat report OUT)"),
    use_ray: bool = typer.Option(False, "--ray", help="run each cell as a task on a local Ray instance with --jobs "
                                                      "CPUs instead of a process pool (the `cluster` extra)"),
    ray_address: str | None = typer.Option(None, "--ray-address", help="run each cell as a task on a running Ray "
                                                                       "cluster: auto | ray://HOST:PORT"),
):
    """Rerun the paper's evaluation grid: tables (md + csv), efficiency.png, optional training.png."""
    from .experiments.evaluate import ABLATION_ALGOS, DEFAULT_ALGOS, GRIDS, METRICS, EvalSettings, plot_training
    from .experiments.evaluate import evaluate as run

    if grid == "dedgeai":  # another problem, not a grid of EAT cells: its study has its own runner
        return offload_study(setting="reduced", seeds=3, methods=algos, out_dir=out_dir / "dedgeai", grid=True,
                             grid_learned=False)
    default = ABLATION_ALGOS if ablation else DEFAULT_ALGOS
    names = tuple(a.strip().lower() for a in algos.split(",") if a.strip()) if algos is not None else default
    # every option is checked before the progress bar starts, so an error is the only thing printed
    if grid not in GRIDS:
        _fail(f"--grid: unknown grid {grid!r}; choose from {', '.join(GRIDS)}, dedgeai")
    unknown = [a for a in names if a not in DEFAULT_ALGOS]
    if unknown or not names:
        _fail(f"--algos: {'unknown algorithm(s) ' + ', '.join(unknown) if unknown else 'no algorithm given'}; "
              f"choose from {', '.join(DEFAULT_ALGOS)}")
    for option, value, low in (("--seeds", seeds, 1), ("--jobs", jobs, 1), ("--optimal", optimal, 0)):
        if value < low:
            _fail(f"{option}: must be >= {low}, got {value}")
    for option, folder in (("--checkpoints", checkpoints), ("--logs", logs)):
        if folder is not None and not folder.is_dir():
            _fail(f"{option}: {folder} is not a folder")
    if not optimal_time > 0:
        _fail(f"--optimal-time: must be > 0, got {optimal_time}")
    if ablation and preset != "authors":
        _fail("--ablation starts from the authors' setting: give --preset authors")
    ray_at = ray_address or ("local" if use_ray else None)
    if ray_at is not None:
        from .experiments.cluster import require_ray

        try:
            require_ray("--ray-address" if ray_address else "--ray")
        except ImportError as e:
            _fail(str(e))
    base = _config(**_preset(preset))
    settings = EvalSettings(grid=grid, algos=names, seeds=seeds, jobs=jobs, checkpoints=checkpoints, base=base,
                            ray=ray_at)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=False) as prog:
        bar = prog.add_task("cells", total=None)
        warn = lambda m: err.print(f"[yellow]warning:[/] {m}")  # noqa: E731
        start = lambda n: prog.update(bar, total=n, completed=0)  # noqa: E731
        cell = lambda c, r, reused: prog.update(bar, advance=1, description=f"{c.key}"  # noqa: E731
                                                + (" (stored)" if reused else ""))
        try:
            if ablation:
                from .experiments.evaluate import evaluate_ablation

                evaluate_ablation(settings, out_dir, warn=warn, on_start=start, on_cell=cell,
                                  on_variant=lambda label: err.print(f"ablation: {label}"))
            else:
                ev = run(settings, out_dir, warn=warn, on_start=start, on_cell=cell)
        except (ValueError, ConnectionError) as e:  # ConnectionError: no Ray cluster at --ray-address
            _fail(str(e))
    if ablation:
        out.print((out_dir / "ablation.md").read_text(), markup=False, highlight=False)
        out.print(f"ablation -> {out_dir} (eat report {out_dir} --results-md docs/results.md)")
        return
    if logs is not None and not plot_training(logs, out_dir / "training.png"):
        err.print(f"[yellow]warning:[/] no {logs}/<algo>-n<nodes>/train_log.csv found; training.png not drawn")
    for metric in METRICS:
        out.print((out_dir / f"{metric}.md").read_text(), markup=False, highlight=False)
    if optimal > 0:
        from .experiments.optimal import OPTIMAL_SIZES, gap_study, gap_table_markdown

        studies = [gap_study(names, instances=optimal, nodes=n, tasks=k, rate=r, time_limit=optimal_time,
                             workers=min(2, jobs), warn=warn, checkpoints=checkpoints) for n, k, r in OPTIMAL_SIZES]
        (out_dir / "optimality.md").write_text(gap_table_markdown(studies))
        out.print((out_dir / "optimality.md").read_text(), markup=False, highlight=False)
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


_OPTIMAL_MAX_TASKS = 16
"""The most tasks ``experiments.optimal.solve`` solves exactly."""


@app.command()
def optimal(
    nodes: int = typer.Option(4, help="servers N"),
    tasks: int = typer.Option(12, help="tasks in the instance"),
    rate: float = typer.Option(0.05, help="Poisson arrival rate (tasks/s)"),
    seed: int = typer.Option(0, help="workload seed"),
    algos: str = typer.Option("random,fifo,greedy,adaptive", help="schedulers to compare (any registered one)"),
    solver: str = typer.Option("cp-sat", help="cp-sat (OR-Tools) | bnb (the branch and bound, for small instances)"),
    time_limit: float = typer.Option(60.0, "--time-limit", help="cp-sat: seconds per solve (two solves)"),
    node_limit: int = typer.Option(2_000_000, help="bnb: node limit"),
    as_json: bool = typer.Option(False, "--json"),
):
    """Solve one instance offline (arrivals known) and print every scheduler's gap: to the optimum when it is proven,
    else to the best schedule found and to the proven bound."""
    from .experiments.optimal import SOLVERS, compare_on_instance

    if not 1 <= tasks <= _OPTIMAL_MAX_TASKS:
        _fail(f"--tasks: must be 1..{_OPTIMAL_MAX_TASKS} (the exact solver's limit), got {tasks}")
    if node_limit < 1:
        _fail(f"--node-limit: must be >= 1, got {node_limit}")
    if solver not in SOLVERS:
        _fail(f"--solver: unknown solver {solver!r}; choose from {', '.join(SOLVERS)}")
    if not time_limit > 0:
        _fail(f"--time-limit: must be > 0, got {time_limit}")
    cfg = _config(nodes=nodes, rate=rate, tasks_per_episode=tasks)
    names = tuple(a.strip().lower() for a in algos.split(",") if a.strip())
    if not names:
        _fail("--algos: no scheduler given")
    try:
        res = compare_on_instance(cfg, seed, names, solver=solver, node_limit=node_limit, time_limit=time_limit)
    except (ValueError, ImportError) as e:
        _fail(str(e))
    if as_json:
        print(json.dumps(res))
        return
    t = Table(title=f"offline {'optimum' if res['optimal'] else 'best found'} vs schedulers: {nodes} nodes, {tasks} "
                    f"tasks, Poisson {rate:g} tasks/s, seed {seed}")
    proven = res["optimal"]
    for col in ("scheduler", "objective R0 (higher is better)",
                "R0 gap % (lower is better)" if proven else "R0 gap % to best found .. to bound (lower is better)",
                "mean response (model s, lower is better)", "vs min response % (lower is better)",
                "sim reward (higher is better)"):
        t.add_column(col, justify="right")

    def cell(v, fmt: str = "{:.4g}") -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)

    for r in res["rows"]:
        gap = cell(r["gap_pct"], "{:.1f}") if proven else f"{r['gap_pct']:.1f} .. {r['gap_bound_pct']:.1f}"
        t.add_row(r["name"], cell(r["objective"], "{:.3f}"), gap,
                  cell(r["mean_response_s"], "{:.2f}"), cell(r["response_excess_pct"], "{:.1f}"),
                  cell(r.get("sim_reward")))
    out.print(t)
    out.print("R0: the simulator's reward without its queue term (docs/optimal.md); R0 gap %: how far below the "
              "optimum's R0 a scheduler's schedule scores.")
    out.print(f"vs min response %: how far a scheduler's mean response is above the smallest mean response any "
              f"schedule of this instance reaches ({res['min_mean_response_s']:.2f} model s, "
              f"{res['response_status']}).")
    out.print("-: does not apply (the optimum is solved offline, not run in the simulator, so it has no sim reward; "
              "it maximises R0, so its response is not compared).")
    found = f" (the schedule of {res['best_found_by']}: nothing better found)" if res["best_found_by"] and not proven \
        else ""
    out.print(f"{res['solver']}: R0 {res['status']}{found}, {res['rows'][0]['objective']:.3f}; proven bound "
              f"{res['upper_bound']:.3f} (gap {res['gap_pct']:.2f}%); {res['solver_status']}, "
              f"{res['solve_s']:.2f} wall s for both objectives; response lower bound (relaxation) "
              f"{res['response_lower_bound_s']:.2f} model s")


@app.command()
def train(
    algo: str = typer.Option(..., help=" | ".join(_algo_names(learned=True))),
    nodes: int = typer.Option(8, help="servers N"),
    rate: str = typer.Option("0.1", help="Poisson arrival rate (tasks/s): one value, a range LO:HI (each episode draws "
                                         "its rate uniformly) or a list A,B,C (each episode draws one)"),
    steps: int | None = typer.Option(None, help="budget in env steps (default: the algorithm's own)"),
    minutes: float | None = typer.Option(None, help="budget in wall-clock minutes (instead of --steps)"),
    seed: int = typer.Option(0, help="seed of networks, exploration and training workloads"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    utd: float | None = typer.Option(None, help="SAC: gradient updates per env step"),
    envs: int | None = typer.Option(None, help="SAC: environments collected per policy forward"),
    warmup_policy: str | None = typer.Option(None, help="SAC: who acts before learning starts: random (default) | "
                                                        "adaptive | patient | fifo | hol (a hand-written "
                                                        "scheduler + noise seeds the replay; the teacher of "
                                                        "--sac bc_updates / bc_weight)"),
    gpu_compile: bool = typer.Option(True, "--compile/--no-compile",
                                     help="SAC on CUDA: torch.compile the update before capturing it (~35 s once)"),
    tf32: bool = typer.Option(True, "--tf32/--no-tf32", help="SAC on CUDA: TF32 matmuls in the captured update"),
    sac: list[str] = typer.Option([], "--sac", help="SAC: any hyperparameter of SACArgs as KEY=VALUE, repeatable "
                                                     "(e.g. --sac autotune=true --sac n_step=3)"),
    profile: str = typer.Option("reference", help="time profile"),
    mode: str | None = typer.Option(None, help="after a no-op: tick (default) | event (jump to the next arrival or "
                                               "completion: far fewer decisions while waiting) | grid"),
    settings: list[str] = typer.Option([], "--set", help=_SET_HELP),
    resume: bool = typer.Option(False, help="continue the run in --out from its train_state.pt"),
    out_dir: Path = typer.Option(..., "--out", help="output folder (policy.pt, logs, tb/)"),
    preset: str = typer.Option("spec", help="spec | authors: train in the authors' setting (their fixed training rate "
                                            "0.5 replaces --rate; docs/fidelity.md)"),
):
    """Train a learned scheduler; writes the checkpoint, train_log.csv, eval_log.csv and TensorBoard logs."""
    from .algos import registry
    from .algos.sac import parse_overrides

    if steps is not None and minutes is not None:
        _fail("give --steps or --minutes, not both")
    if (steps is not None and steps < 1) or (minutes is not None and minutes <= 0):
        _fail("the budget must be positive")
    cfg = _config(**_preset(preset, nodes=nodes, profile=profile, mode=mode, **_rates(rate), **_settings(settings)))
    if cfg.train_rate is not None:  # the authors trained at one fixed rate whatever the script said
        err.print(f"training at rate {cfg.train_rate:g} (train_rate of --preset {preset}; --set train_rate=none "
                  f"honours --rate)")
        try:
            cfg = cfg.training_config()
        except ConfigError as e:
            _fail(_option_error(e))
    extra = {k: v for k, v in {"utd": utd, "num_envs": envs, "warmup_policy": warmup_policy}.items() if v is not None}
    if not (gpu_compile and tf32):  # SAC-only settings: passed only when they differ from the defaults
        extra.update(gpu_compile=gpu_compile, gpu_tf32=tf32)
    try:
        family = registry.get(algo).family
    except ValueError as e:
        _fail(str(e))
    if family == "heuristic":
        _fail(f"--algo {algo} is hand-written; nothing to train (learned: {', '.join(registry.names(learned=True))})")
    if family != "sac" and extra:
        _fail(f"--{next(iter(extra)).replace('num_envs', 'envs').replace('_', '-')} is a SAC option; "
              f"{algo} is not of the SAC family ({', '.join(registry.names('sac'))})")
    if sac:
        if family != "sac":
            _fail(f"--sac sets SAC hyperparameters; {algo} is not of the SAC family "
                  f"({', '.join(registry.names('sac'))})")
        try:
            generic = parse_overrides(sac)
        except ValueError as e:
            _fail(str(e))
        clash = sorted(k for k in generic.keys() & extra.keys() if generic[k] != extra[k])
        if clash:
            _fail(f"--sac {clash[0]} contradicts the option that sets it")
        extra.update(generic)
    try:
        path = registry.train(algo, cfg, out_dir, steps=steps, minutes=minutes, seed=seed, device=device,
                              progress=sys.stderr.isatty() or os.environ.get("EAT_PROGRESS") == "1", resume=resume,
                              overrides=extra)
    except (ValueError, FileNotFoundError, ImportError) as e:
        _fail(str(e))
    from .algos.sac_policy import read_checkpoint

    label = read_checkpoint(path).get("label", "") if path.suffix == ".pt" else ""
    out.print(f"checkpoint: {path}" + (f" ({label})" if label else ""))


@app.command()
def sweep(
    config: Path = typer.Argument(..., help="sweep config (TOML; eatsched/experiments/sweep.py documents its keys, "
                                            "sweeps/shipped.toml regenerates the shipped checkpoints)"),
    ray_address: str | None = typer.Option(None, "--ray-address", help="a running Ray cluster: auto | "
                                                                       "ray://HOST:PORT (default: a local instance)"),
    out_dir: Path | None = typer.Option(None, "--out", help="output folder (default: the config's out)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="check the config and list the runs; train nothing"),
):
    """Train a set of runs (algorithms x cluster sizes x rates x seeds x hyperparameters) with Ray Tune; each run
    an `eat train` folder under --out. Resumable: finished runs are kept, interrupted SAC runs resume."""
    from .experiments.cluster import require_ray
    from .experiments.sweep import SweepError, load_sweep, plan_runs, run_sweep

    try:
        sw = load_sweep(config, out=out_dir)
        plan = plan_runs(sw)
    except (SweepError, FileNotFoundError) as e:
        _fail(str(e))
    if dry_run:
        for run in sw.runs:
            params = " ".join(f"{k}={v}" for k, v in run.params.items())
            out.print(f"{run.name}: {plan[run.name]}, {run.algo} on {run.nodes} nodes at rate {run.rate_text}, seed "
                      f"{run.seed}" + (f", {params}" if params else ""), markup=False, highlight=False)
        out.print(f"{len(sw.runs)} runs -> {sw.out}")
        return
    try:
        require_ray("eat sweep")
        rows = run_sweep(sw, ray_address, echo=lambda m: err.print(m, markup=False, highlight=False))
    except (ImportError, ValueError, ConnectionError) as e:
        _fail(str(e))
    t = Table(title=f"sweep {config.name}: best evaluation of each run (validation seeds)")
    for col in ("run", "status", "env steps", "best reward (higher better)", "efficiency (higher better)",
                "response model s (lower better)"):
        t.add_column(col, justify="right")
    num = lambda v, f: "" if v is None or v != v else f.format(v)  # noqa: E731
    for r in rows:
        t.add_row(r["run"], r["status"], num(r["env_steps"], "{:,}"), num(r["best_mean_reward"], "{:.1f}"),
                  num(r["efficiency"], "{:.5f}"), num(r["mean_response_s"], "{:.1f}"))
    out.print(t)
    failed = [r for r in rows if r["status"].startswith("failed")]
    out.print(f"{len(rows)} runs -> {sw.out} (summary.md, summary.csv)")
    if failed:
        _fail(f"{len(failed)} of {len(rows)} runs failed ({failed[0]['run']}: {failed[0]['status']}); rerun the "
              f"sweep to retry them")


@bench_app.command("train")
def bench_train(
    seconds: float = typer.Option(5.0, help="seconds per measurement"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    nodes: int = typer.Option(8),
    as_json: bool = typer.Option(False, "--json"),
    to_adaptive: float = typer.Option(0.0, "--to-adaptive", help="also train EAT with the shipped recipe at --nodes, "
                                      "rate 0.5 for up to this many minutes and report the wall time to first reach "
                                      "adaptive's efficiency on the validation seeds (0: skip)"),
):
    """Gradient updates/s of EAT and EAT-DA at batch 512, FLOPs per update, fraction of the measured matmul rate,
    and env-steps/s while training; with --to-adaptive, the time a training takes to reach adaptive."""
    import torch

    from .bench.train import bench_update, matmul_rate, time_to_heuristic

    if device.startswith("cuda") and not torch.cuda.is_available():
        err.print("[yellow]CUDA is not available here; measuring on the CPU instead[/]")
        device = "cpu"
    cfg = _config(nodes=nodes, rate=0.1)
    peak = matmul_rate(device, seconds=min(2.0, seconds))
    runs = [(a, {}) for a in ("eat", "eat-da")]
    if device.startswith("cuda"):
        # the same update captured without torch.compile / TF32, and eager (one launch per kernel), same run
        runs += [("eat", {"gpu_fast": False}), ("eat", {"graph": False})]
    rows = []
    for i, (algo, kw) in enumerate(runs, 1):
        with err.status(f"measuring {algo} {' '.join(f'{k}={v}' for k, v in kw.items())} ({i}/{len(runs)})"):
            rows.append(bench_update(algo, cfg, device, seconds, peak_gflops=peak, **kw))
    base = {r["algo"]: r["updates_per_s"] for r in rows if r["path"] in ("autograd", "eager")}
    for r in rows:  # speed-up over the plain path (autograd on the CPU, eager on a GPU), same run
        r["x_plain"] = r["updates_per_s"] / base[r["algo"]] if r["algo"] in base else None
    reach = None
    if to_adaptive > 0:
        with err.status(f"training EAT at {nodes} nodes, rate 0.5 until it reaches adaptive (<= {to_adaptive:g} min)"):
            reach = time_to_heuristic("eat", nodes, 0.5, to_adaptive)
    if as_json:
        print(json.dumps({"device": device, "threads": torch.get_num_threads(), "matmul_gflops": peak,
                          "results": rows, "time_to_adaptive": reach}))
        return
    t = Table(title=f"SAC update throughput on {device} ({torch.get_num_threads()} threads), batch 512; "
                    f"fp32 matmul ceiling {peak:,.0f} GFLOP/s")
    for col in ("algo", "path", "updates/s", "x plain", "GFLOP/upd", "GFLOP/s", "of ceil", "ms upd/mm/b8",
                "x authors", "env-st/s"):
        t.add_column(col, justify="right")
    for r in rows:
        floor = (f"{r['update_ms']:.1f} / {r['matmul_only_ms']:.1f} / {r['batch8_ms']:.1f}"
                 if "batch8_ms" in r else "")
        share = f"{r['fraction_of_matmul']:.0%}"
        if "fraction_range" in r:
            share += " ({:.0%}-{:.0%})".format(*r["fraction_range"])
        t.add_row(r["algo"], r["path"], f"{r['updates_per_s']:.1f}", f"{r['x_plain']:.2f}x" if r["x_plain"] else "",
                  f"{r['gflop_per_update']:.2f}", f"{r['achieved_gflops']:.0f}", share,
                  floor, f"{r['x_authors']:.1f}x", f"{r['env_steps_per_s_training']:,.0f}")
    out.print(t)
    if "update_ms" in rows[0]:
        out.print("of ceil: median over ~1 s rounds, each against the matmul ceiling measured just before it "
                  "(range in brackets). ms upd/mm/b8: one update; its matmuls replayed alone with the same "
                  "shapes; one update at batch 8 (the cost that does not scale with the batch: Python, dispatch, "
                  "launches, optimizer): at these sizes the update is bound by that overhead, not by FLOPs. x plain: "
                  "updates/s over the autograd path of the same run. env-st/s: env steps/s of the training loop.")
    if reach is not None:
        if reach["reached"]:
            out.print(f"EAT (shipped recipe) reached adaptive's efficiency {reach['target_efficiency']:.5f} at "
                      f"{nodes} nodes, rate 0.5 after {reach['wall_s'] / 60:.1f} wall min (lower is better), "
                      f"{reach['env_steps']:,} env steps, {reach['updates']:,} updates "
                      f"({reach['env_steps_per_s']:.1f} env steps/s while training)")
        else:
            out.print(f"EAT (shipped recipe) did not reach adaptive's efficiency {reach['target_efficiency']:.5f} "
                      f"within {to_adaptive:g} min")


@bench_app.command("decide")
def bench_decide(
    decisions: int = typer.Option(2000, help="decisions timed per policy"),
    nodes: int = typer.Option(8),
    as_json: bool = typer.Option(False, "--json"),
):
    """p50/p99 single-decision latency (batch 1, CPU) of every policy."""
    from .bench.decide import bench_decide as run

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


@app.command("offload-study")
def offload_study(
    setting: str = typer.Option("reduced", help="reduced (10 stations x 20 slots, 120 episodes) | full (the "
                                                "authors' dedgeai run: 20 x 60, 500 episodes) | tiny (a smoke test)"),
    seeds: int = typer.Option(3, help="training seeds per learned method"),
    methods: str | None = typer.Option(None, help="comma-separated learned methods (default: dqn-ts, sac-ts, "
                                                  "d2sac-ts, lad-ts)"),
    out_dir: Path | None = typer.Option(None, "--out", help="output folder (resumable; default runs/offload-SETTING)"),
    grid: bool = typer.Option(True, "--grid/--no-grid", help="the delay table over stations x tasks per slot"),
    grid_learned: bool = typer.Option(False, "--grid-learned", help="also train every learned method (one seed) "
                                                                   "in every grid cell"),
):
    """LAD-TS on its own problem (DEdgeAI offloading): convergence curves, delays, grid, the paper's claims checked."""
    import dataclasses

    from .algos.offload_learn import METHODS
    from .experiments.offload_study import SETTINGS, run_study

    if setting not in SETTINGS:
        _fail(f"--setting: unknown setting {setting!r}; choose from {', '.join(SETTINGS)}")
    names = tuple(m.strip().lower() for m in methods.split(",") if m.strip()) if methods is not None else tuple(METHODS)
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        _fail(f"--methods: {'unknown method(s) ' + ', '.join(unknown) if unknown else 'no method given'}; "
              f"choose from {', '.join(METHODS)}")
    if seeds < 1:
        _fail(f"--seeds: must be >= 1, got {seeds}")
    folder = out_dir or Path(f"runs/offload-{setting}")
    chosen = dataclasses.replace(SETTINGS[setting], grid_learned=grid_learned)
    try:
        run_study(chosen, folder, seeds=seeds, methods=names, grid=grid, log=lambda m: err.print(m, markup=False))
    except ValueError as e:
        _fail(str(e))
    out.print((folder / "summary.md").read_text(), markup=False, highlight=False)
    out.print(f"-> {folder} (summary.json, summary.md, curves.png, grid/)")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
