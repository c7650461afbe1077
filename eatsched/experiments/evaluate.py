"""The paper's evaluation (Tables IX-XII, Fig. 8) rerun on our simulator: every (nodes, rate, algorithm) cell
over K held-out workload seeds, with t-based 95% confidence intervals.

Who calls it: ``eat evaluate`` (and ``eat report`` reads what it writes). Each cell is one call of
``sim.rollout.simulate`` (so its numbers are exactly ``eat simulate --seed EVAL_SEED0 --episodes K``)
and is stored as ``DIR/cells/<algo>-n<nodes>-r<rate>.json``; a rerun reuses every stored cell whose
fingerprint (config, seeds, checkpoint bytes) still matches, so an interrupted run resumes where it stopped.
Cells run in this process, in a local process pool (``jobs``) or as Ray tasks (``EvalSettings.ray``: a local
Ray instance or a cluster); where they ran changes nothing they store.

Learned algorithms reach us only through ``algos.make_policy``; one whose module or checkpoint is missing
is skipped with a warning and listed in ``DIR/skipped.json`` and in the tables' notes, never a crash.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import hashlib
import json
import math
import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..algos import registry
from ..core.config import AUTHORS_FIXES, PRESETS, EATConfig
from ..core.metrics import EFFICIENCY_DEFINITION
from ..core.seeds import HELD_OUT_SEED0

GRIDS: dict[str, tuple[tuple[int, tuple[float, ...]], ...]] = {
    "paper": (
        (4, (0.01, 0.03, 0.05, 0.07, 0.09)),
        (8, (0.06, 0.08, 0.10, 0.12, 0.14)),
        (12, (0.11, 0.13, 0.15, 0.17, 0.19)),
    ),
    "small": ((4, (0.05,)), (8, (0.10,))),
    "heavy": ((4, (0.25,)), (8, (0.5,)), (12, (0.75,))),
}
"""Experiment grids: (nodes, arrival rates). ``paper`` is the paper's Tables IX-XII grid (SPEC section 3); ``heavy``
the loads where scheduling matters (the learning issue's heavy rates; 8 x 0.5 is the rate the authors trained at)."""

DEFAULT_ALGOS = registry.names()
"""Every registered scheduler, in the registry's order (the paper's table order, then the hand-written ones)."""

EVAL_SEED0 = HELD_OUT_SEED0
"""First held-out workload seed: cell episodes use seeds EVAL_SEED0 .. EVAL_SEED0 + K - 1 (``core.seeds``: no
policy was trained or selected on these workloads)."""

METRICS: dict[str, tuple[str, str, str]] = {
    # table name: (summary key, title with unit and direction, number format)
    "quality": ("mean_quality", "Table IX: mean task quality (CLIP-score model q(s), higher is better)", "{:.3f}"),
    "response": ("mean_response_s", "Table X: mean response latency (model s, lower is better)", "{:.1f}"),
    "reload": ("reload_rate", "Table XI: model reload rate (reloads / launched tasks, lower is better)", "{:.3f}"),
    "decision_time": ("mean_decision_ms",
                      "Table XII: mean decision time per scheduling step (wall ms, lower is better)", "{:.3f}"),
    "efficiency": ("efficiency", "Fig. 8 as a table: efficiency (quality / model s, higher is better)", "{:.4f}"),
}
"""The tables ``evaluate`` writes: the paper's four in its order, then Fig. 8's numbers. Every title says the unit
and which direction is better (model s: the simulator's clock; wall ms: measured on the machine that ran it)."""

EPISODE_KEYS = ("mean_quality", "mean_response_s", "p95_response_s", "reload_rate", "efficiency",
                "mean_decision_ms", "reward", "completed_fraction", "decisions")


# --- statistics ---------------------------------------------------------------------------------------------
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """Two-sided 95% Student-t quantile for ``df`` degrees of freedom (table to 30, then 1.96 + 2.4/df)."""
    if df < 1:
        return math.nan
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df


def ci95(values: Sequence[float]) -> float:
    """Half-width of the t-based 95% confidence interval of the mean over seeds (NaN for fewer than two)."""
    x = np.asarray([v for v in values if v == v], np.float64)
    if len(x) < 2:
        return math.nan
    return float(t_quantile_975(len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))


# --- cells --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    algo: str
    nodes: int
    rate: float

    @property
    def key(self) -> str:
        return f"{self.algo}-n{self.nodes}-r{self.rate:g}"

    @property
    def column(self) -> str:
        return f"N{self.nodes} {self.rate:g}"


@dataclass
class EvalSettings:
    """Everything that defines an evaluation run (saved as ``DIR/settings.json``)."""

    grid: str = "paper"
    algos: tuple[str, ...] = DEFAULT_ALGOS
    seeds: int = 10
    seed0: int = EVAL_SEED0
    jobs: int = 1
    checkpoints: Path | None = None
    base: EATConfig = field(default_factory=EATConfig)
    cells: tuple[tuple[int, tuple[float, ...]], ...] | None = None  # overrides ``grid`` (tests, custom grids)
    ray: str | None = None
    """where cells run: None, local processes (``jobs``); ``local``, a local Ray instance with ``jobs`` CPUs; ``auto``
    or ``ray://HOST:PORT``, a Ray cluster (one task per cell). Not in settings.json: it does not change a cell."""

    def grid_cells(self) -> tuple[tuple[int, tuple[float, ...]], ...]:
        if self.cells is not None:
            return self.cells
        if self.grid not in GRIDS:
            raise ValueError(f"unknown grid {self.grid!r}; choose from {', '.join(GRIDS)}")
        return GRIDS[self.grid]

    def columns(self) -> list[tuple[int, float]]:
        return [(n, r) for n, rates in self.grid_cells() for r in rates]

    def to_dict(self) -> dict:
        return {"grid": self.grid, "algos": list(self.algos), "seeds": self.seeds, "seed0": self.seed0,
                "jobs": self.jobs, "checkpoints": str(self.checkpoints) if self.checkpoints else None,
                "cells": [[n, list(r)] for n, r in self.grid_cells()], "base_config": self.base.to_dict()}


def checkpoint_path(algo: str, nodes: int, checkpoints: Path | None) -> str | None:
    """``--checkpoints DIR``'s file for a learned algorithm (None: the shipped one; heuristics have none)."""
    path = registry.checkpoint_in(algo, nodes, checkpoints)
    return None if path is None else str(path)


def _file_digest(path: str | None) -> str | None:
    if path is None:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(cell: Cell, cfg: EATConfig, seed0: int, seeds: int, checkpoint: str | None) -> str:
    """What a stored cell must match to be reused: algorithm, full config, seeds and checkpoint bytes."""
    ckpt = checkpoint or registry.shipped_or_none(cell.algo, cell.nodes)
    blob = json.dumps({"algo": cell.algo, "config": cfg.to_dict(), "seed0": seed0, "seeds": seeds,
                       "checkpoint": _file_digest(ckpt)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def probe(algo: str, cfg: EATConfig, checkpoints: Path | None) -> tuple[str | None, str | None]:
    """(checkpoint, None) if ``algo`` can run on ``cfg``'s cluster, else (None, reason to skip it)."""

    try:
        ckpt = checkpoint_path(algo, cfg.nodes, checkpoints)
        registry.make_policy(algo, cfg, checkpoint=ckpt, seed=0)
    except (ImportError, ValueError, FileNotFoundError, OSError, KeyError, RuntimeError) as e:
        return None, f"{type(e).__name__}: {e}"
    return ckpt, None


def run_cell(cell: Cell, cfg: EATConfig, seed0: int, seeds: int, checkpoint: str | None) -> dict:
    """Run one cell (top level so a process pool can call it): ``simulate`` over seeds seed0.. seed0+K-1."""
    from ..sim.rollout import simulate  # noqa: PLC0415

    t0 = time.perf_counter()
    # warm-up on a throwaway policy and seed, so compile/cache loading is not timed as decision time
    simulate(registry.make_policy(cell.algo, cfg, checkpoint=checkpoint, seed=seed0), cfg, 1, seed0 - 1)
    policy = registry.make_policy(cell.algo, cfg, checkpoint=checkpoint, seed=seed0)
    res = simulate(policy, cfg, seeds, seed0)
    summary = res.summary()
    episodes = [{k: float(e[k]) for k in EPISODE_KEYS if k in e} | {"seed": int(e["seed"])} for e in res.episodes]
    ci = {k: ci95([e[k] for e in episodes]) for k in EPISODE_KEYS}
    return {"algo": cell.algo, "nodes": cell.nodes, "rate": cell.rate, "seed0": seed0, "seeds": seeds,
            "checkpoint": checkpoint, "summary": summary, "ci95": ci, "episodes": episodes,
            "wall_s": time.perf_counter() - t0, "config": cfg.to_dict()}


# --- the run ------------------------------------------------------------------------------------------------
@dataclass
class Evaluation:
    settings: EvalSettings
    records: dict[Cell, dict]
    skipped: dict[str, str]  # "algo" or "algo-nN" -> reason
    computed: list[Cell]
    wall_s: float
    response_bounds: dict[str, float] = field(default_factory=dict)  # column -> lower bound on mean response


def _cell_file(out: Path, cell: Cell) -> Path:
    return out / "cells" / f"{cell.key}.json"


def load_cell(out: Path, cell: Cell, fp: str) -> dict | None:
    p = _cell_file(out, cell)
    if not p.is_file():
        return None
    try:
        rec = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return rec if rec.get("fingerprint") == fp else None


def _store_cell(out: Path, cell: Cell, rec: dict) -> None:
    p = _cell_file(out, cell)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec, indent=1, default=str))
    tmp.replace(p)  # atomic: an interrupted run never leaves half a cell


def evaluate(settings: EvalSettings, out: Path, *, warn: Callable[[str], None] = print,
             on_start: Callable[[int], None] | None = None,
             on_cell: Callable[[Cell, dict, bool], None] | None = None) -> Evaluation:
    """Run (or resume) every cell of the grid; writes cells, tables and plots under ``out``.

    ``on_start(n_cells)`` then ``on_cell(cell, record, reused)`` once per cell drive a progress bar."""
    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unknown = [a for a in settings.algos if a not in registry.REGISTRY]
    if unknown:
        raise ValueError(f"unknown algorithm(s) {', '.join(unknown)}; choose from {', '.join(registry.names())}")
    if settings.seeds < 1:
        raise ValueError("seeds: must be >= 1")

    skipped: dict[str, str] = {}
    todo: list[tuple[Cell, EATConfig, str | None, str]] = []
    records: dict[Cell, dict] = {}
    reused: list[Cell] = []
    for algo in settings.algos:
        for nodes, rates in settings.grid_cells():
            cfg_n = settings.base.replace(nodes=nodes, rate=rates[0])
            ckpt, reason = ((None, None) if not registry.get(algo).learned
                            else probe(algo, cfg_n, settings.checkpoints))
            if reason is not None:
                reason = reason.splitlines()[0][:200]
                skipped[f"{algo}-n{nodes}"] = reason
                warn(f"skipping {algo} on {nodes} nodes: {reason}")
                continue
            for rate in rates:
                cell = Cell(algo, nodes, float(rate))
                cfg = settings.base.replace(nodes=nodes, rate=float(rate))
                fp = fingerprint(cell, cfg, settings.seed0, settings.seeds, ckpt)
                rec = load_cell(out, cell, fp)
                if rec is not None:
                    records[cell] = rec
                    reused.append(cell)
                else:
                    todo.append((cell, cfg, ckpt, fp))

    if on_start is not None:
        on_start(len(records) + len(todo))
    for cell in reused:
        if on_cell is not None:
            on_cell(cell, records[cell], True)

    # expensive cells first (greedy enumerates every action; learned policies run a network)
    todo.sort(key=lambda t: (t[0].algo in ("random", "fifo", "adaptive"), -t[0].nodes))

    def finish(cell: Cell, fp: str, rec: dict) -> None:
        rec["fingerprint"] = fp
        _store_cell(out, cell, rec)
        records[cell] = rec
        if on_cell is not None:
            on_cell(cell, rec, False)

    def failed(cell: Cell, e: BaseException) -> None:
        """A cell whose policy crashed is reported and left out; the other cells go on (and are stored)."""
        skipped[cell.key] = f"failed: {type(e).__name__}: {e}".splitlines()[0][:200]
        warn(f"cell {cell.key} failed ({type(e).__name__}: {e}); it is left out and retried on the next run")
        if on_cell is not None:
            on_cell(cell, {}, False)

    for cell, fp, rec in _map_cells(todo, settings):
        if isinstance(rec, BaseException):
            failed(cell, rec)
        else:
            finish(cell, fp, rec)

    ordered = {c: records[c] for c in sorted(records, key=lambda c: (settings.algos.index(c.algo), c.nodes, c.rate))}
    ev = Evaluation(settings, ordered, skipped, [t[0] for t in todo if t[0] in records], time.perf_counter() - t_start,
                    response_bounds(settings))
    write_outputs(ev, out)
    return ev


def _map_cells(todo: list[tuple[Cell, EATConfig, str | None, str]], settings: EvalSettings):
    """``run_cell`` over ``todo`` where ``settings`` says (in this process, a process pool, or Ray tasks); yields
    ``(cell, fingerprint, record or the exception it raised)`` as cells finish."""
    calls = [((cell, cfg, settings.seed0, settings.seeds, ckpt), fp) for cell, cfg, ckpt, fp in todo]
    if settings.ray is not None and calls:
        from .cluster import connect  # noqa: PLC0415 - optional

        ray = connect(settings.ray, num_cpus=settings.jobs)
        task = ray.remote(num_cpus=1, max_retries=0)(run_cell)
        pending = {task.remote(*args): (args[0], fp) for args, fp in calls}
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            cell, fp = pending.pop(ref)
            try:
                yield cell, fp, ray.get(ref)
            except ray.exceptions.RayError as e:  # the cell's own exception (as the pool gives it), or a lost worker
                cause = getattr(e, "cause", None)
                yield cell, fp, cause if isinstance(cause, BaseException) else e
    elif settings.jobs <= 1 or len(calls) <= 1:
        for args, fp in calls:
            try:
                rec = run_cell(*args)
            except Exception as e:  # noqa: BLE001 - a learned policy may raise anything
                rec = e
            yield args[0], fp, rec
    else:
        ctx = mp.get_context("spawn")  # no fork of a parent that may hold torch / numba threads
        with cf.ProcessPoolExecutor(max_workers=settings.jobs, mp_context=ctx) as pool:
            futs = {pool.submit(run_cell, *args): (args[0], fp) for args, fp in calls}
            for fut in cf.as_completed(futs):
                cell, fp = futs[fut]
                try:
                    rec = fut.result()
                except Exception as e:  # noqa: BLE001
                    rec = e
                yield cell, fp, rec


def response_bounds(settings: EvalSettings) -> dict[str, float]:
    """Per column, the mean over the cell's seeds of ``optimal.response_lower_bound``: no scheduler's mean
    response on those workloads can be lower (when every task finishes; see docs/optimal.md)."""
    from ..sim.env import EATEnv  # noqa: PLC0415
    from .optimal import response_lower_bound  # noqa: PLC0415

    out = {}
    for nodes, rate in settings.columns():
        cfg = settings.base.replace(nodes=nodes, rate=float(rate))
        env = EATEnv(cfg)
        vals = []
        for seed in range(settings.seed0, settings.seed0 + settings.seeds):
            env.reset(seed=seed)
            vals.append(response_lower_bound(cfg, env.workload))
        out[f"N{nodes} {float(rate):g}"] = float(np.mean(vals))
    return out


# --- outputs ------------------------------------------------------------------------------------------------
def table_rows(ev: Evaluation, metric: str) -> tuple[list[str], list[list]]:
    """Header and rows (algorithm, then per column value and CI half-width) of one table."""
    key = METRICS[metric][0]
    cols = ev.settings.columns()
    header = ["algorithm"] + [f"N{n} {r:g}" for n, r in cols]
    rows = []
    for algo in ev.settings.algos:
        row: list = [algo]
        have = False
        for n, r in cols:
            rec = ev.records.get(Cell(algo, n, float(r)))
            if rec is None:
                row.append(None)
            else:
                have = True
                row.append((float(rec["summary"][key]), float(rec["ci95"].get(key, math.nan))))
        if have:
            rows.append(row)
    return header, rows


def _fmt(v, fmt: str) -> str:
    if v is None:
        return "skipped"
    mean, half = v
    if mean != mean:
        return "nan"
    return fmt.format(mean) + ("" if half != half else f" ± {fmt.format(half)}")


def write_outputs(ev: Evaluation, out: Path) -> None:
    out = Path(out)
    (out / "settings.json").write_text(json.dumps(ev.settings.to_dict(), indent=1))
    (out / "skipped.json").write_text(json.dumps(ev.skipped, indent=1))
    (out / "response_bound.json").write_text(json.dumps(ev.response_bounds, indent=1))
    for metric, (key, _title, _fmt) in METRICS.items():
        header, rows = table_rows(ev, metric)
        with (out / f"{metric}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["algorithm", "nodes", "rate", key, "ci95", "seeds", "seed0"])
            for row in rows:
                for (n, r), v in zip(ev.settings.columns(), row[1:], strict=True):
                    if v is not None:
                        w.writerow([row[0], n, f"{r:g}", repr(v[0]), repr(v[1]), ev.settings.seeds,
                                    ev.settings.seed0])
        (out / f"{metric}.md").write_text(markdown_table(ev, metric))
    plot_efficiency(ev, out / "efficiency.png")


def markdown_table(ev: Evaluation, metric: str) -> str:
    key, title, fmt = METRICS[metric]
    header, rows = table_rows(ev, metric)
    s = ev.settings
    lines = [f"### {title}", "",
             f"Mean ± 95% CI half-width (t over {s.seeds} held-out seeds {s.seed0}..{s.seed0 + s.seeds - 1}; "
             f"{s.base.tasks_per_episode} tasks each). Columns: nodes and arrival rate (tasks/s).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join([row[0]] + [_fmt(v, fmt) for v in row[1:]]) + " |")
    if metric == "response" and ev.response_bounds:
        cells = []
        for (n, r), col in zip(s.columns(), header[1:], strict=True):
            recs = [ev.records.get(Cell(a, n, float(r))) for a in s.algos]
            complete = all(rec["summary"]["tasks_completed"] == rec["summary"]["tasks"] for rec in recs if rec)
            b = ev.response_bounds.get(col, math.nan)
            cells.append(fmt.format(b) if complete and b == b else "(truncated)")
        lines.append("| *lower bound* | " + " | ".join(cells) + " |")
        lines += ["", "*lower bound*: no schedule of these workloads has a lower mean response (relaxation to one "
                  "preemptive machine, docs/optimal.md); not shown where episodes were truncated."]
    if metric == "efficiency":
        lines += ["", EFFICIENCY_DEFINITION + "."]
    if ev.skipped:
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in ev.skipped.items())]
    return "\n".join(lines) + "\n"


# --- the ablation: from the authors' setting, each SPEC fix alone ------------------------------------------------
ABLATION_ALGOS = ("random", "greedy", "fifo", "adaptive", "eat")
"""Schedulers of the ablation's rows (``eat evaluate --ablation``; ``--algos`` overrides)."""
VERDICT_ALGOS = ("eat", "eat-a", "eat-d", "eat-da", "ppo", "random", "greedy", "fifo", "adaptive")
"""Schedulers run on the two ends (the authors' setting and SPEC's) for the claim-by-claim verdict: the paper's DRL
methods, its Random and Greedy, and our two hand-written baselines."""
DRL_ALGOS = ("eat", "eat-a", "eat-d", "eat-da", "ppo")
"""The paper's learned (DRL) methods, among which it claims EAT has the lowest latency."""
PAPER_ALGOS = ("eat", "eat-a", "eat-d", "eat-da", "ppo", "random", "greedy")
"""The paper's algorithms that the verdict runs (Genetic and Harmony are left out: open-loop searches)."""
FIX_AFFECTS = {"greedy slot": ("greedy",), "greedy pricing": ("greedy",),
               "double tanh": ("eat", "eat-a", "eat-d", "eat-da", "lad-ts")}
"""Fixes that only one scheduler (family) reads: the others' cells of that row are the authors' row's, not rerun."""
ABLATION_METRICS = (("quality", "mean_quality", "{:.3f}", True), ("response", "mean_response_s", "{:.1f}", False),
                    ("reload", "reload_rate", "{:.3f}", False))


def ablation_variants() -> list[tuple[str, str, dict, tuple[str, ...] | None]]:
    """(folder, label, config fields, schedulers it affects or None for all): the authors' setting, then each fix
    of ``AUTHORS_FIXES`` alone on top of it (the training rate is left out: only training reads it), then SPEC."""
    out = [("authors", "authors' setting (--preset authors)", dict(PRESETS["authors"]), None)]
    for fix, changes in AUTHORS_FIXES.items():
        if fix == "training rate":
            continue
        out.append((fix.replace(" ", "-"), f"+ {fix}", {**PRESETS["authors"], **changes}, FIX_AFFECTS.get(fix)))
    out.append(("spec", "SPEC (every fix; --preset spec)", dict(PRESETS["spec"]), None))
    return out


def evaluate_ablation(settings: EvalSettings, out: Path, *, verdict_algos: Sequence[str] = VERDICT_ALGOS,
                      warn: Callable[[str], None] = print, on_variant: Callable[[str], None] | None = None,
                      on_start: Callable[[int], None] | None = None,
                      on_cell: Callable[[Cell, dict, bool], None] | None = None) -> dict:
    """Run the grid of ``settings`` once per ablation variant, each an ordinary (resumable) evaluation folder
    ``out/variants/<name>``; the two ends also run ``verdict_algos``. Writes ``out/ablation.json`` and
    ``out/ablation.md`` (tables of grid means with CIs, then the verdict) and returns the summary."""
    out = Path(out)
    done: dict[str, Evaluation] = {}
    for name, label, fields, affects in ablation_variants():
        algos = tuple(settings.algos)
        if name in ("authors", "spec"):
            algos = tuple(dict.fromkeys(algos + tuple(verdict_algos)))
        elif affects is not None:
            algos = tuple(a for a in algos if a in affects)
        if not algos:
            continue
        if on_variant is not None:
            on_variant(label)
        s = replace(settings, algos=algos, base=EATConfig(**fields))
        done[name] = evaluate(s, out / "variants" / name, warn=warn, on_start=on_start, on_cell=on_cell)
    summary = ablation_summary(done, settings)
    (out / "ablation.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "ablation.md").write_text(ablation_markdown(summary))
    return summary


def grid_mean(ev: Evaluation, algo: str, key: str) -> tuple[float, float] | None:
    """Mean over the grid's columns of ``key`` and its 95% CI: per seed, the mean over the columns of that seed's
    episode value; then the t interval over seeds (None if a column is missing)."""
    per_seed: dict[int, list[float]] = {}
    for n, r in ev.settings.columns():
        rec = ev.records.get(Cell(algo, n, float(r)))
        if rec is None:
            return None
        for e in rec["episodes"]:
            per_seed.setdefault(int(e["seed"]), []).append(float(e.get(key, math.nan)))
    vals = [float(np.nanmean(v)) for v in per_seed.values()]
    return float(np.mean(vals)), ci95(vals)


def ablation_summary(done: dict[str, Evaluation], settings: EvalSettings) -> dict:
    """Grid means with CIs per variant, scheduler and metric, and the verdict on the paper's claims."""
    variants = []
    for name, label, fields, affects in ablation_variants():
        ev = done.get(name)
        if ev is None:
            continue
        rows = {}
        for algo in dict.fromkeys(settings.algos + (VERDICT_ALGOS if name in ("authors", "spec") else ())):
            src, same = ev, False
            if affects is not None and algo not in affects and "authors" in done:
                src, same = done["authors"], True
            vals = {m: grid_mean(src, algo, key) for m, key, _, _ in ABLATION_METRICS}
            vals["decision_time"] = grid_mean(src, algo, "mean_decision_ms")
            if any(v is not None for v in vals.values()):
                rows[algo] = {"values": vals, "as_authors": same}
        variants.append({"name": name, "label": label, "fields": fields, "rows": rows})
    s = settings
    return {"grid": s.grid, "seeds": s.seeds, "seed0": s.seed0, "columns": [[n, r] for n, r in s.columns()],
            "algos": list(s.algos), "variants": variants, "verdict": verdict(variants)}


def _value(variants: list[dict], name: str, algo: str, metric: str) -> float:
    for v in variants:
        if v["name"] == name and algo in v["rows"]:
            x = v["rows"][algo]["values"].get(metric)
            return math.nan if x is None else float(x[0])
    return math.nan


def verdict(variants: list[dict]) -> list[dict]:
    """The paper's claims, each judged under the authors' setting and under SPEC's, from the grid means."""

    def judge(name: str) -> list[tuple[bool | None, str]]:
        def val(algo, metric):
            return _value(variants, name, algo, metric)

        out = []
        drl = {a: val(a, "response") for a in DRL_ALGOS if val(a, "response") == val(a, "response")}
        if "eat" in drl and len(drl) > 1:
            order = sorted(drl, key=drl.get)
            out.append((all(drl["eat"] < v for a, v in drl.items() if a != "eat"),
                        "response s: " + ", ".join(f"{a} {drl[a]:.1f}" for a in order)))
        else:
            out.append((None, "not run"))
        paper = [a for a in PAPER_ALGOS if val(a, "quality") == val(a, "quality")]
        if "greedy" in paper and len(paper) > 1:
            q = {a: val(a, "quality") for a in paper}
            r = {a: val(a, "response") for a in paper}
            best_q, worst_r = max(q, key=q.get), max(r, key=r.get)
            out.append((q["greedy"] >= max(q.values()) and r["greedy"] >= max(r.values()),
                        f"best quality: {best_q} {q[best_q]:.3f} (greedy {q['greedy']:.3f}); worst response: "
                        f"{worst_r} {r[worst_r]:.1f} s (greedy {r['greedy']:.1f} s)"))
        else:
            out.append((None, "not run"))
        rel = {a: val(a, "reload") for a in paper if val(a, "reload") == val(a, "reload")}
        if "eat" in rel and len(rel) > 1:
            order = sorted(rel, key=rel.get)
            out.append((all(rel["eat"] < v for a, v in rel.items() if a != "eat"),
                        "reload rate: " + ", ".join(f"{a} {rel[a]:.3f}" for a in order[:4])
                        + (", ..." if len(order) > 4 else "")))
        else:
            out.append((None, "not run"))
        ms = val("eat", "decision_time")
        out.append((None, "not run") if ms != ms else (ms < 10.0, f"EAT {ms:.2f} ms per decision (this machine)"))
        return out

    claims = ("EAT has the lowest latency among the learned (DRL) methods",
              "Greedy has the best quality and the worst latency",
              "EAT has the lowest reload rate (among the paper's algorithms run here)",
              "EAT decides in milliseconds")
    a, s = judge("authors"), judge("spec")
    return [{"claim": c, "authors": a[i][0], "authors_detail": a[i][1], "spec": s[i][0], "spec_detail": s[i][1]}
            for i, c in enumerate(claims)]


def ablation_markdown(summary: dict) -> str:
    """The ablation's tables (one per metric: variants down, schedulers across; mean ± 95% CI over seeds of the
    grid mean) and the verdict."""
    algos = summary["algos"]
    lines = [f"Grid `{summary['grid']}` ({len(summary['columns'])} columns), {summary['seeds']} held-out seeds "
             f"({summary['seed0']}..); each cell is the mean over the grid's columns, ± the 95% CI over seeds of that "
             "mean. Rows: the authors' setting, then one SPEC fix at a time on top of it, then SPEC (all fixes). "
             "`=`: the fix does not touch this scheduler (the authors' row, not rerun).", ""]
    for metric, _key, fmt, _higher in ABLATION_METRICS:
        title = METRICS[metric][1].split(": ", 1)[1]
        lines += [f"#### Ablation: {title}", "", "| setting | " + " | ".join(algos) + " |",
                  "|---|" + "---|" * len(algos)]
        for v in summary["variants"]:
            cells = []
            for a in algos:
                row = v["rows"].get(a)
                x = None if row is None else row["values"].get(metric)
                if x is None:
                    cells.append("-")
                    continue
                mean, half = x
                cells.append(("= " if row["as_authors"] else "") + fmt.format(mean)
                             + ("" if half != half else f" ± {fmt.format(half)}"))
            lines.append(f"| {v['label']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["#### The paper's claims under each setting", "",
              "| claim | authors' setting | SPEC |", "|---|---|---|"]
    word = {True: "holds", False: "does not hold", None: "not run"}
    for c in summary["verdict"]:
        lines.append(f"| {c['claim']} | **{word[c['authors']]}**: {c['authors_detail']} | **{word[c['spec']]}**: "
                     f"{c['spec_detail']} |")
    return "\n".join(lines) + "\n"


ALGO_COLOURS: dict[str, str] = {
    "eat": "#0072B2", "eat-a": "#56B4E9", "eat-d": "#009E73", "eat-da": "#332288", "lad-ts": "#CC79A7",
    "ppo": "#882255", "genetic": "#999933", "harmony": "#44AA99", "random": "#777777", "fifo": "#E69F00",
    "greedy": "#D55E00", "adaptive": "#000000", "hol": "#117733", "patient": "#AA3377",
}
"""One fixed colour per registered scheduler, the same in every plot: Okabe-Ito's colour-blind-safe eight (without
yellow, which vanishes on white) and Paul Tol's indigo, wine, olive, teal and green. Markers tell them apart too."""
EXTRA_COLOURS = ("#AA4499", "#DDAA33", "#6699CC", "#994455", "#997700", "#EE99AA", "#004488")
"""Colours for schedulers not in ``ALGO_COLOURS`` (a new registry entry), handed out in order of appearance."""
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "*", "d", "H", "8", "x", "+", "1", "2", "3", "4")
"""One marker per algorithm (the registry's order); ``*`` is drawn larger, being thinner."""


def algo_styles(names: Sequence[str]) -> dict[str, dict]:
    """Colour and marker of each algorithm in ``names``: deterministic per name, distinct within one plot."""
    known = list(ALGO_COLOURS)
    used = {ALGO_COLOURS[n] for n in names if n in ALGO_COLOURS}
    spare = [c for c in EXTRA_COLOURS if c not in used]
    taken_markers = {known.index(n) % len(MARKERS) for n in names if n in ALGO_COLOURS}
    spare_markers = [m for i, m in enumerate(MARKERS) if i not in taken_markers]
    out: dict[str, dict] = {}
    for n in dict.fromkeys(names):
        if n in ALGO_COLOURS:
            out[n] = {"color": ALGO_COLOURS[n], "marker": MARKERS[known.index(n) % len(MARKERS)]}
        else:
            k = len([m for m in out if m not in ALGO_COLOURS])
            out[n] = {"color": spare[k % len(spare)], "marker": spare_markers[k % len(spare_markers)]}
    return out


def plot_efficiency(ev: Evaluation, path: Path | None = None):
    """Fig. 8: efficiency (mean quality / mean response in model s) per algorithm, one panel per cluster size;
    returns the matplotlib ``Figure`` (written to ``path`` when given).

    A panel with several rates draws a line per algorithm against the rate, the algorithms' points side by side
    around each rate so that their error bars do not cover each other; a panel with one rate (the small grid)
    draws one point per algorithm, algorithms across."""
    from matplotlib.figure import Figure  # noqa: PLC0415 - no pyplot: no global state
    from matplotlib.lines import Line2D  # noqa: PLC0415

    groups = ev.settings.grid_cells()
    algos = [a for a in ev.settings.algos if any(c.algo == a for c in ev.records)]
    styles = algo_styles(algos)
    fig = Figure(figsize=(4.4 * len(groups) + 1.8, 3.8))
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, (nodes, rates) in zip(axes, groups, strict=True):
        rates = [float(r) for r in rates]
        spacing = min((b - a for a, b in zip(rates, rates[1:], strict=False)), default=1.0)
        for i, algo in enumerate(algos):
            pts = []
            for r in rates:
                rec = ev.records.get(Cell(algo, nodes, r))
                if rec is not None:
                    e = rec.get("ci95", {}).get("efficiency", math.nan)
                    pts.append((r, float(rec["summary"]["efficiency"]), 0.0 if e != e else float(e)))
            if not pts:
                continue
            r, y, e = (list(v) for v in zip(*pts, strict=True))
            if len(rates) == 1:
                x = [float(i)] * len(r)
            else:  # dodge: the algorithms share 60% of the gap between rates
                x = [v + spacing * 0.6 * ((i + 0.5) / len(algos) - 0.5) for v in r]
            bars = ax.errorbar(x, y, yerr=e, color=styles[algo]["color"], marker=styles[algo]["marker"],
                               ms=9.5 if styles[algo]["marker"] == "*" else 7,
                               mec="white", mew=0.4, capsize=2, lw=1.2 if len(rates) > 1 else 0, elinewidth=1,
                               label=algo)
            bars.lines[0].set_gid(f"efficiency/{algo}")  # the points (a test reads them back by this id)
        if len(rates) == 1:
            ax.set_xticks(range(len(algos)))
            ax.set_xticklabels(algos, rotation=60, ha="right", fontsize=8)
            ax.set_xlim(-0.7, len(algos) - 0.3)
            ax.set_title(f"{nodes} nodes, {rates[0]:g} tasks/s", fontsize=10)
        else:
            ax.set_xticks(rates)
            ax.set_xticklabels([f"{r:g}" for r in rates])
            ax.set_xlabel("arrival rate (tasks/s)")
            ax.set_title(f"{nodes} nodes", fontsize=10)
        ax.set_ylabel("efficiency (quality / model s)")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=styles[a]["color"], marker=styles[a]["marker"], mec="white", label=a,
                      ms=8.5 if styles[a]["marker"] == "*" else 6) for a in algos]
    fig.legend(handles=handles, loc="center right", fontsize=8, title="algorithm", title_fontsize=8, frameon=False)
    s = ev.settings
    fig.suptitle(f"{EFFICIENCY_DEFINITION}; mean and 95% CI over {s.seeds} held-out seeds", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1 - 1.5 / fig.get_figwidth(), 1))
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


TRAIN_COLUMNS = ("step", "episodes", "episode_reward", "episode_length", "loss_actor", "loss_critic", "alpha",
                 "wall_s")


def read_train_logs(logs: Path) -> dict[str, dict[str, np.ndarray]]:
    """``logs/<algo>-n<nodes>/train_log.csv`` (the training contract) -> {run name: {column: values}};
    empty cells become NaN."""
    runs: dict[str, dict[str, np.ndarray]] = {}
    for f in sorted(Path(logs).glob("*/train_log.csv")):
        with f.open(newline="") as fh:
            reader = csv.DictReader(fh)
            cols: dict[str, list[float]] = {c: [] for c in reader.fieldnames or []}
            for row in reader:
                for c in cols:
                    try:
                        cols[c].append(float(row[c]) if row[c] not in ("", None) else math.nan)
                    except ValueError:
                        cols[c].append(math.nan)
        if "step" in cols and cols["step"]:
            runs[f.parent.name] = {c: np.asarray(v, np.float64) for c, v in cols.items()}
    return runs


def plot_training(logs: Path, path: Path | None = None):
    """Fig. 5: episode reward, losses and episode length against env steps for every run under ``logs``
    (``<algo>-n<nodes>``: colour and marker by algorithm, line style by cluster size). Returns the matplotlib
    ``Figure`` (written to ``path`` when given), or None (and draws nothing) when there are no logs."""
    runs = read_train_logs(logs)
    if not runs:
        return None
    from matplotlib.figure import Figure  # noqa: PLC0415
    from matplotlib.lines import Line2D  # noqa: PLC0415

    def split(name: str) -> tuple[str, str]:
        algo, _, nodes = name.rpartition("-n")
        return (algo, nodes) if algo and nodes.isdigit() else (name, "")

    order = list(ALGO_COLOURS)
    algos = sorted(dict.fromkeys(split(n)[0] for n in runs),
                   key=lambda a: (a not in order, order.index(a) if a in order else 0, a))  # the registry's order
    sizes = sorted({split(n)[1] for n in runs}, key=lambda v: (len(v), v))
    dashes = dict(zip(sizes, ("-", "--", ":", "-."), strict=False))
    styles = algo_styles(algos)
    panels = (("episode_reward", "(a) episode reward (higher is better)", "reward per episode"),
              ("loss_actor", "(b) actor loss", "loss"), ("loss_critic", "(c) critic loss", "loss"),
              ("episode_length", "(d) episode length", "decisions per episode"))
    fig = Figure(figsize=(4.2 * len(panels) + 1.8, 3.6))
    axes = fig.subplots(1, len(panels))
    for ax, (col, title, unit) in zip(axes, panels, strict=True):
        for name, cols in runs.items():
            if col in cols and np.isfinite(cols[col]).any():
                algo, size = split(name)
                ok = np.isfinite(cols[col])
                ax.plot(cols["step"][ok], cols[col][ok], label=name, lw=1.2, color=styles[algo]["color"],
                        marker=styles[algo]["marker"], ms=4, markevery=max(1, int(ok.sum()) // 8),
                        ls=dashes.get(size, "-"), gid=f"training/{name}")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("env steps")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=styles[a]["color"], marker=styles[a]["marker"], ms=5, label=a) for a in algos]
    if len(sizes) > 1 or sizes != [""]:
        handles += [Line2D([], [], color="#555555", ls=dashes[v], label=f"{v} nodes" if v else "other")
                    for v in sizes]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 1.5 / fig.get_figwidth(), 1))
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
