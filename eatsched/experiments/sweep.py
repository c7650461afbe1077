"""Training sweeps on Ray Tune (``eat sweep CONFIG.toml``): algorithms x cluster sizes x rates x training seeds x
hyperparameter values or search spaces, one Tune trial per run, each run an ordinary ``eat train`` folder.

Who calls it: ``eat sweep`` (``cli.py``). Each run is ``algos.registry.train`` on ``OUT/<run name>`` (``policy.*``,
``best_policy.pt``, ``train_log.csv``, ``eval_log.csv``, ``tb/``, ``train_state.pt``), so ``eat simulate
--checkpoint``, ``eat evaluate --logs`` and ``eat train --resume`` work on it as on any run. A run that ends writes
``OUT/<run>/sweep_run.json``; a rerun of the sweep skips those, resumes the SAC runs that were interrupted
(``train_state.pt``, the rest of the budget) and restarts the others. The sweep ends with ``OUT/summary.md`` and
``OUT/summary.csv``. The config (TOML), every key optional except ``algos``, ``nodes`` and ``rates``::

    out = "runs/my-sweep"                  # default: runs/<config file name>
    algos = ["eat", "eat-da"]              # learned algorithms (registry names)
    nodes = [4, 8]
    rates = {4 = 0.05, 8 = [0.08, "0.08:0.6"]}   # a rate, a range "LO:HI" (each episode draws its rate uniformly:
                                                 # EATConfig rate, rate_max), a list (crossed with nodes), a table
                                                 # per cluster size, "shipped" (registry.SHIPPED_RATES) or
                                                 # "shipped-range" (registry.SHIPPED_RATE_RANGES)
    seeds = [0, 1]                         # training seeds (default [0])
    steps = 100_000                        # or minutes = 30; default: each algorithm's own budget
    device = "cpu"
    samples = 4                            # draws of the search spaces (default 1)
    search_seed = 0
    install = "shipped"                    # copy each run's checkpoint as {algo}-n{nodes}.{ext}: "shipped" (the
                                           # package's checkpoints) or a folder; needs one run per algo and size
    cpus_per_run = 1                       # Ray resources of one run (gpus_per_run: default 1 on cuda, else 0)
    max_concurrent = 8
    early_stopping = {metric = "mean_reward", grace_steps = 20_000, reduction_factor = 3}   # ASHA (SAC runs)

    [params]                               # hyperparameters (fields of SACArgs / PPOArgs / SearchArgs)
    utd = [0.25, 0.5]                      # a list: one run per value (a grid)
    lr = {loguniform = [1e-4, 1e-3]}       # a search space: choice | uniform | loguniform | randint
    [params.eat-da]                        # only for eat-da runs (or a family: sac, ppo, search)
    hidden = 128

    [config]                               # any other EATConfig field, for every run
    w_q = 20

    [[runs]]                               # optional groups, each crossed on its own; keys here override the top
    algos = ["ppo"]

Each sample draws every search space once, shared by the grid cells of that sample (so seeds and algorithms are
compared at the same values). Run names are ``{algo}-n{nodes}`` plus what varies among the runs of that algorithm
and size (``-r{rate}`` or ``-r{lo}-{hi}`` for a range, ``-s{seed}``, ``-{param}{value}``, ``-t{sample}``). Every
config error is one line naming the key, raised by ``load_sweep`` / ``plan_runs`` before any run starts.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import json
import math
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..algos import registry
from ..algos.training import EVAL_COLUMNS
from ..core.config import ConfigError, EATConfig, parse_field_values

MARKER = "sweep_run.json"
"""Written into a run's folder when it ends (finished, or stopped early by ASHA): the sweep will not redo it."""
SPACES = ("choice", "uniform", "loguniform", "randint")
"""Search spaces a hyperparameter may be given as (Ray Tune's names; ``randint``'s upper end is excluded)."""
GROUP_KEYS = ("algos", "nodes", "rates", "seeds", "steps", "minutes", "device", "samples", "params", "config")
TOP_KEYS = GROUP_KEYS + ("out", "install", "search_seed", "cpus_per_run", "gpus_per_run", "max_concurrent",
                         "early_stopping", "runs")
ES_DEFAULTS = {"metric": "mean_reward", "grace_steps": 10_000, "reduction_factor": 3}
LOWER_IS_BETTER = ("mean_response_s",)
_OWN_FIELDS = ("nodes", "rate", "rate_max", "rate_choices")


class SweepError(ValueError):
    """A malformed sweep config: one line that names the key."""


@dataclass
class Run:
    """One training of the sweep."""

    name: str
    algo: str
    nodes: int
    rate: float
    seed: int = 0
    params: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    steps: int | None = None
    minutes: float | None = None
    device: str = "cpu"
    rate_max: float | None = None
    """set: each episode draws its rate uniformly from [rate, rate_max] (``EATConfig.rate_max``)"""

    @property
    def rate_text(self) -> str:
        """The rate as the config gives it: ``0.1`` or ``0.08:0.6`` (a range)."""
        return f"{self.rate:g}" + (f":{self.rate_max:g}" if self.rate_max is not None else "")

    def identity(self) -> dict:
        """What a finished run must match to be reused (the budget and the device may change)."""
        return json.loads(json.dumps({k: getattr(self, k) for k in ("algo", "nodes", "rate", "rate_max", "seed",
                                                                     "params", "config")}, default=list))

    def eat_config(self) -> EATConfig:
        return EATConfig(nodes=self.nodes, rate=self.rate, rate_max=self.rate_max,
                         **{k: tuple(v) if isinstance(v, list) else v for k, v in self.config.items()})

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self), default=list))


@dataclass
class Sweep:
    source: Path
    out: Path
    runs: list[Run]
    install: str | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    max_concurrent: int | None = None
    early_stopping: dict | None = None


# --- the config -----------------------------------------------------------------------------------------------
def _is_num(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _grid(v, key: str, kind, what: str) -> list:
    vals = v if isinstance(v, list) else [v]
    if not vals:
        raise SweepError(f"{key}: empty grid (give at least one value)")
    for x in vals:
        if not (isinstance(x, kind) and not isinstance(x, bool)):
            raise SweepError(f"{key}: expected {what}, got {x!r}")
    return vals


_RATE_WHAT = "a rate (tasks/s) or a range \"LO:HI\""


def _rate(x, key: str) -> tuple[float, float | None]:
    """One rate entry: a number > 0, or ``"LO:HI"`` with 0 < LO < HI (each episode draws its rate uniformly)."""
    if isinstance(x, str):
        parts = x.split(":")
        try:
            lo, hi = (float(p) for p in parts) if len(parts) == 2 else (math.nan, math.nan)
        except ValueError:
            lo = hi = math.nan
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
            raise SweepError(f"{key}: a range is \"LO:HI\" with 0 < LO < HI (tasks/s), got {x!r}")
        return lo, hi
    if not _is_num(x):
        raise SweepError(f"{key}: expected {_RATE_WHAT}, got {x!r}")
    if not (math.isfinite(x) and x > 0):
        raise SweepError(f"{key}: rates must be > 0 (tasks/s), got {x!r}")
    return float(x), None


def _rates(v, nodes: list[int], key: str) -> dict[int, list[tuple[float, float | None]]]:
    """Per cluster size, its rates as (rate, rate_max): rate_max None for a fixed rate."""
    if v is None:
        raise SweepError(f"{key}: missing (a rate, a range \"LO:HI\", a list, a table per cluster size, "
                         f"\"shipped\" or \"shipped-range\")")
    if v == "shipped-range":
        v = {str(n): f"{lo}:{hi}" for n, (lo, hi) in registry.SHIPPED_RATE_RANGES.items() if n in nodes}
        missing = [n for n in nodes if str(n) not in v]
        if missing:
            raise SweepError(f"{key}: no shipped rate range for {missing[0]} nodes (shipped: "
                             f"{', '.join(map(str, registry.SHIPPED_RATE_RANGES))})")
    elif v == "shipped":
        v = {str(n): r for n, r in registry.SHIPPED_RATES.items() if n in nodes}
        missing = [n for n in nodes if str(n) not in v]
        if missing:
            raise SweepError(f"{key}: no shipped rate for {missing[0]} nodes (shipped: "
                             f"{', '.join(map(str, registry.SHIPPED_RATES))})")
    if isinstance(v, dict):
        extra = [k for k in v if not (k.isdigit() and int(k) in nodes)]
        if extra:
            raise SweepError(f"{key}.{extra[0]}: not one of the sweep's cluster sizes ({', '.join(map(str, nodes))})")
        out = {}
        for n in nodes:
            if str(n) not in v:
                raise SweepError(f"{key}.{n}: missing (rates are given per cluster size)")
            out[n] = [_rate(r, f"{key}.{n}") for r in _grid(v[str(n)], f"{key}.{n}", int | float | str, _RATE_WHAT)]
    else:
        out = {n: [_rate(r, key) for r in _grid(v, key, int | float | str, _RATE_WHAT)] for n in nodes}
    return out


def _space(v: dict, key: str):
    if len(v) != 1 or next(iter(v)) not in SPACES:
        raise SweepError(f"{key}: a search space is one of {' | '.join(f'{{{s} = [...]}}' for s in SPACES)}, "
                         f"got {v!r}")
    kind, arg = next(iter(v.items()))
    if not isinstance(arg, list) or not arg:
        raise SweepError(f"{key}: {kind} needs a non-empty list (empty grid)")
    if kind != "choice":
        ok = len(arg) == 2 and all(_is_num(a) for a in arg) and arg[0] < arg[1]
        ok = ok and (kind != "loguniform" or arg[0] > 0) and (kind != "randint" or all(isinstance(a, int)
                                                                                       for a in arg))
        if not ok:
            raise SweepError(f"{key}: {kind} takes [low, high] with low < high"
                             + (" (both > 0)" if kind == "loguniform" else "")
                             + (" (integers, high excluded)" if kind == "randint" else "") + f", got {arg!r}")
    return kind, arg


def _draw(space, rng: np.random.Generator):
    kind, arg = space
    if kind == "choice":
        return arg[int(rng.integers(len(arg)))]
    if kind == "uniform":
        return float(rng.uniform(arg[0], arg[1]))
    if kind == "loguniform":
        return float(math.exp(rng.uniform(math.log(arg[0]), math.log(arg[1]))))
    return int(rng.integers(arg[0], arg[1]))


def _text(v) -> str:
    """A TOML value as ``parse_field_values`` reads it (``--sac KEY=VALUE``)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list | tuple):
        return ",".join(_text(x) for x in v)
    return "none" if v is None else str(v)


def _check_param(algo: str, key: str, value, where: str):
    """``value`` converted to the type of the hyperparameter ``key`` of ``algo`` (SweepError naming the key)."""
    cls = type(registry.get(algo).default_args())
    try:
        return parse_field_values(cls, [f"{key}={_text(value)}"], "params", f"hyperparameter of {algo}")[key]
    except ConfigError as e:
        raise SweepError(f"{where}params.{e}") from None


def _is_tuple_field(algo: str, key: str) -> bool:
    cls = type(registry.get(algo).default_args())
    return any(f.name == key and str(f.type).startswith("tuple") for f in dataclasses.fields(cls))


def _params(table, algos: list[str], where: str) -> dict[str, dict[str, tuple[str, object]]]:
    """Per algorithm, each hyperparameter as ("fixed", value) | ("grid", [values]) | ("space", (kind, args)); an
    algorithm's own section beats its family's, which beats the top of ``params``."""
    if table is None:
        return {a: {} for a in algos}
    if not isinstance(table, dict):
        raise SweepError(f"{where}params: expected a table of hyperparameters")
    scoped: dict[str, dict] = {"": {}}
    for k, v in table.items():
        if k in registry.REGISTRY or k in registry.FAMILIES:
            if not isinstance(v, dict):
                raise SweepError(f"{where}params.{k}: expected a table of {k}'s hyperparameters")
            if k in registry.REGISTRY and k not in algos or k in registry.FAMILIES and not any(
                    registry.get(a).family == k for a in algos):
                raise SweepError(f"{where}params.{k}: no {k} run in this sweep (algos: {', '.join(algos)})")
            scoped[k] = v
        else:
            scoped[""][k] = v
    out = {}
    for algo in algos:
        merged: dict[str, tuple[str, object]] = {}
        for scope in ("", registry.get(algo).family, algo):
            for k, v in scoped.get(scope, {}).items():
                key = f"{scope + '.' if scope else ''}{k}"
                if isinstance(v, dict):
                    kind, arg = _space(v, f"{where}params.{key}")
                    for x in ([arg[0], arg[-1]] if kind != "choice" else arg):
                        _check_param(algo, k, x, where)
                    merged[k] = ("space", (kind, arg))
                elif isinstance(v, list) and not (_is_tuple_field(algo, k) and not any(isinstance(x, list)
                                                                                          for x in v)):
                    if not v:
                        raise SweepError(f"{where}params.{key}: empty grid (give at least one value)")
                    merged[k] = ("grid", [_check_param(algo, k, x, where) for x in v])
                else:
                    merged[k] = ("fixed", _check_param(algo, k, v, where))
        out[algo] = merged
    return out


def _config_fields(table, where: str) -> dict:
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise SweepError(f"{where}config: expected a table of EATConfig fields")
    known = {f.name for f in dataclasses.fields(EATConfig)}
    out = {}
    for k, v in table.items():
        if k in _OWN_FIELDS:
            raise SweepError(f"{where}config.{k}: set by the sweep's nodes / rates keys")
        if k not in known:
            raise SweepError(f"{where}config.{k}: not an EATConfig field")
        if k in ("profile", "trace_path") and isinstance(v, str) and Path(v).is_file():
            v = str(Path(v).resolve())  # trials run in other folders (and on other machines)
        out[k] = v
    return out


def _group(top: dict, group: dict, where: str, search_seed: int, gi: int) -> list[dict]:
    """The runs of one group (unnamed): dicts of Run fields plus ``_varies`` (what a name may show)."""
    for k in group:
        if k not in GROUP_KEYS:
            raise SweepError(f"{where}{k}: unknown key; choose from {', '.join(GROUP_KEYS)}")
    g = {**{k: top[k] for k in GROUP_KEYS if k in top}, **group}
    if "algos" not in g:
        raise SweepError(f"{where}algos: missing")
    algos = [a.lower() for a in _grid(g["algos"], f"{where}algos", str, "an algorithm name")]
    for a in algos:
        if a not in registry.REGISTRY:
            raise SweepError(f"{where}algos: unknown algorithm {a!r}; choose from "
                             f"{', '.join(registry.names(learned=True))}")
        if not registry.get(a).learned:
            raise SweepError(f"{where}algos: {a} is hand-written, nothing to train; choose from "
                             f"{', '.join(registry.names(learned=True))}")
    if "nodes" not in g:
        raise SweepError(f"{where}nodes: missing")
    nodes = _grid(g["nodes"], f"{where}nodes", int, "a number of servers")
    rates = _rates(g.get("rates"), nodes, f"{where}rates")
    seeds = _grid(g.get("seeds", 0), f"{where}seeds", int, "an integer seed")
    steps, minutes = g.get("steps"), g.get("minutes")
    if steps is not None and minutes is not None:
        raise SweepError(f"{where}steps: give steps or minutes, not both")
    if steps is not None and not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1):
        raise SweepError(f"{where}steps: expected an integer >= 1, got {steps!r}")
    if minutes is not None and not (_is_num(minutes) and minutes > 0):
        raise SweepError(f"{where}minutes: expected a number > 0, got {minutes!r}")
    device = g.get("device", "cpu")
    if not (isinstance(device, str) and re.fullmatch(r"cpu|cuda(:\d+)?", device)):
        raise SweepError(f"{where}device: expected cpu | cuda | cuda:N, got {device!r}")
    samples = g.get("samples", 1)
    if not (isinstance(samples, int) and not isinstance(samples, bool) and samples >= 1):
        raise SweepError(f"{where}samples: expected an integer >= 1, got {samples!r}")
    params = _params(g.get("params"), algos, where)
    config = _config_fields(g.get("config"), where)
    for n in nodes:
        for r, r_max in rates[n]:
            try:
                EATConfig(nodes=n, rate=r, rate_max=r_max,
                          **{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
            except (ConfigError, TypeError, ValueError) as e:
                f = getattr(e, "field", None)
                raise SweepError(f"{where}{'config.' if f not in (None, 'nodes', 'rate', 'rate_max') else ''}{e}"
                                 ) from None
    spaces = sorted({(a, k): s for a, ps in params.items() for k, (kind, s) in ps.items() if kind == "space"}.items())
    if samples > 1 and not spaces:
        raise SweepError(f"{where}samples: no search space to sample (repeat runs with seeds)")
    draws = []  # per sample: (algo, key) -> value; every space drawn once per sample, the same across the grid
    for k in range(samples):
        rng = np.random.default_rng([search_seed, gi, k])
        by_key: dict[tuple, object] = {}
        for (a, key), s in spaces:
            spec = (key, json.dumps(s))  # the same space given for several algorithms: one draw
            if spec not in by_key:
                by_key[spec] = _check_param(a, key, _draw(s, rng), where)
        draws.append({(a, key): by_key[(key, json.dumps(s))] for (a, key), s in spaces})
    runs = []
    for algo in algos:
        ps = params[algo]
        fixed = {k: v for k, (kind, v) in ps.items() if kind == "fixed"}
        grid_keys = sorted(k for k, (kind, _) in ps.items() if kind == "grid")
        space_keys = sorted(k for k, (kind, _) in ps.items() if kind == "space")
        n_samples = samples if space_keys else 1  # an algorithm without a search space runs once
        for n, seed, combo, k in itertools.product(nodes, seeds, itertools.product(*(ps[key][1] for key in grid_keys)),
                                                   range(n_samples)):
            for r, r_max in rates[n]:
                p = {**fixed, **dict(zip(grid_keys, combo, strict=True)),
                     **{key: draws[k][(algo, key)] for key in space_keys}}
                runs.append(dict(algo=algo, nodes=n, rate=r, rate_max=r_max, seed=seed,
                                 params=dict(sorted(p.items())), config=config, steps=steps, minutes=minutes,
                                 device=device, _sample=k if n_samples > 1 else None, _space=space_keys,
                                 _where=where))
    return runs


def _value_tag(v) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list | tuple):
        return "x".join(_value_tag(x) for x in v)
    return re.sub(r"[^A-Za-z0-9._]+", "_", str(v))


def _name(runs: list[dict]) -> list[Run]:
    """Name every run ``{algo}-n{nodes}`` plus what varies among the runs of that algorithm and cluster size."""
    buckets: dict[tuple, list[dict]] = {}
    for r in runs:
        buckets.setdefault((r["algo"], r["nodes"]), []).append(r)
    out, seen = [], {}
    for r in runs:
        peers = buckets[(r["algo"], r["nodes"])]
        varies = lambda f, peers=peers: len({json.dumps(f(x), default=list) for x in peers}) > 1  # noqa: E731
        name = f"{r['algo']}-n{r['nodes']}"
        if varies(lambda x: (x["rate"], x["rate_max"])):
            name += f"-r{r['rate']:g}" + (f"-{r['rate_max']:g}" if r["rate_max"] is not None else "")
        if varies(lambda x: x["seed"]):
            name += f"-s{r['seed']}"
        for key in sorted({k for x in peers for k in x["params"]}):  # drawn values show as the sample index
            if key not in r["_space"] and varies(lambda x, key=key: x["params"].get(key)):
                name += f"-{key}{_value_tag(r['params'].get(key, 'default'))}"
        if varies(lambda x: x["_sample"]) and r["_sample"] is not None:
            name += f"-t{r['_sample']}"
        if varies(lambda x: (x["steps"], x["minutes"])):
            name += (f"-{r['steps']}steps" if r["steps"] is not None
                     else f"-{r['minutes']:g}min" if r["minutes"] is not None else "-default")
        if varies(lambda x: x["config"]):
            name += "-c" + hashlib.sha256(json.dumps(r["config"], sort_keys=True).encode()).hexdigest()[:6]
        if name in seen:
            raise SweepError(f"{r['_where'] or ''}algos: run {name} appears twice (once in "
                             f"{seen[name] or 'the top level'}); give each run different settings")
        seen[name] = r["_where"]
        out.append(Run(name=name, **{k: v for k, v in r.items() if not k.startswith("_")}))
    return out


def load_sweep(path: str | Path, out: str | Path | None = None) -> Sweep:
    """Read and check a sweep config; every run is expanded and named, nothing is started. Raises ``SweepError``
    (one line naming the key) on a malformed config, ``FileNotFoundError`` when there is no file."""
    try:
        import tomllib  # noqa: PLC0415
    except ImportError:  # Python 3.10
        import tomli as tomllib  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no sweep config {path}")
    try:
        top = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SweepError(f"{path}: not valid TOML ({e})") from None
    for k in top:
        if k not in TOP_KEYS:
            raise SweepError(f"{k}: unknown key; choose from {', '.join(TOP_KEYS)}")
    search_seed = top.get("search_seed", 0)
    if not isinstance(search_seed, int) or isinstance(search_seed, bool):
        raise SweepError(f"search_seed: expected an integer, got {search_seed!r}")
    groups = top.get("runs")
    if groups is None:
        raw = _group(top, {}, "", search_seed, 0)
    else:
        if not isinstance(groups, list) or not groups:
            raise SweepError("runs: empty grid (give at least one [[runs]] table, or leave the key out)")
        raw = [r for i, g in enumerate(groups) for r in _group(top, g, f"runs[{i}].", search_seed, i)]
    runs = _name(raw)
    sweep = Sweep(source=path, out=Path(out) if out is not None else Path(top.get("out", f"runs/{path.stem}")),
                  runs=runs)
    for key in ("cpus_per_run", "gpus_per_run"):
        v = top.get(key, 1 if key == "cpus_per_run" else (1 if any(r.device != "cpu" for r in runs) else 0))
        if not _is_num(v) or v < 0 or (key == "cpus_per_run" and v == 0):
            raise SweepError(f"{key}: expected a number {'> 0' if key == 'cpus_per_run' else '>= 0'}, got {v!r}")
        setattr(sweep, key, float(v))
    mc = top.get("max_concurrent")
    if mc is not None and not (isinstance(mc, int) and not isinstance(mc, bool) and mc >= 1):
        raise SweepError(f"max_concurrent: expected an integer >= 1, got {mc!r}")
    sweep.max_concurrent = mc
    install = top.get("install")
    if install is not None:
        if not isinstance(install, str) or not install:
            raise SweepError(f"install: expected \"shipped\" or a folder, got {install!r}")
        per = {}
        for r in runs:
            per.setdefault(f"{r.algo}-n{r.nodes}", []).append(r.name)
        many = [k for k, v in per.items() if len(v) > 1]
        if many:
            raise SweepError(f"install: needs one run per algorithm and cluster size; {many[0]} has "
                             f"{len(per[many[0]])} ({', '.join(per[many[0]][:3])}, ...)")
        sweep.install = install
    es = top.get("early_stopping")
    if es is not None and es is not False:
        es = {} if es is True else es
        if not isinstance(es, dict):
            raise SweepError("early_stopping: expected true or a table (metric, grace_steps, reduction_factor)")
        for k in es:
            if k not in ES_DEFAULTS:
                raise SweepError(f"early_stopping.{k}: unknown key; choose from {', '.join(ES_DEFAULTS)}")
        es = {**ES_DEFAULTS, **es}
        if es["metric"] not in EVAL_COLUMNS[1:]:
            raise SweepError(f"early_stopping.metric: {es['metric']!r} is not a column of eval_log.csv; choose "
                             f"from {', '.join(EVAL_COLUMNS[1:])}")
        if not (isinstance(es["grace_steps"], int) and es["grace_steps"] >= 1):
            raise SweepError(f"early_stopping.grace_steps: expected an integer >= 1, got {es['grace_steps']!r}")
        if not (_is_num(es["reduction_factor"]) and es["reduction_factor"] > 1):
            raise SweepError(f"early_stopping.reduction_factor: expected a number > 1, got "
                             f"{es['reduction_factor']!r}")
        settings = {(r.nodes, r.rate, r.rate_max, json.dumps(r.config, sort_keys=True)) for r in runs}
        if len(settings) > 1:
            raise SweepError(f"early_stopping: ASHA compares runs on one reward scale, so the sweep must have one "
                             f"cluster size, rate and config (it has {len(settings)})")
        sweep.early_stopping = es
    return sweep


# --- one run --------------------------------------------------------------------------------------------------
def read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((Path(folder) / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _write_marker(folder: Path, run: Run, status: str, **extra) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (MARKER + ".tmp")
    tmp.write_text(json.dumps({"status": status, "run": run.to_dict(), **extra}, indent=1, default=str))
    tmp.replace(folder / MARKER)


def _remaining(run: Run, folder: Path) -> tuple[bool, int | None, float | None]:
    """(resume?, steps, minutes) still to train: a SAC run with ``train_state.pt`` continues with the rest of its
    budget (zero or less: nothing left); any other run starts over."""
    state = folder / "train_state.pt"
    if registry.get(run.algo).family != "sac" or not state.is_file():
        return False, run.steps, run.minutes
    import torch  # noqa: PLC0415

    from ..algos.sac_train import DEFAULT_SAC_STEPS  # noqa: PLC0415

    st = torch.load(state, map_location="cpu", weights_only=False)
    if run.minutes is not None:
        return True, None, run.minutes - float(st["wall_s"]) / 60.0
    return True, (run.steps or DEFAULT_SAC_STEPS) - int(st["step"]), None


def _eval_rows(folder: Path) -> list[dict]:
    try:
        with (folder / "eval_log.csv").open() as f:
            return [{k: float(v) if v not in ("", None) else math.nan for k, v in r.items()} for r in csv.DictReader(f)]
    except (OSError, ValueError):
        return []


def checkpoint_of(run: Run, folder: Path) -> Path | None:
    """The run's checkpoint to deploy: the best evaluated policy of a SAC run, else ``policy.{ext}``."""
    algo = registry.get(run.algo)
    for name in (["best_policy.pt"] if algo.family == "sac" else []) + [f"policy.{algo.checkpoint_ext}"]:
        if (folder / name).is_file():
            return folder / name
    return None


def train_run(run: Run, folder: str | Path, report: Callable[[dict], None] | None = None) -> Path | None:
    """Train (or resume) one run in ``folder`` and mark it finished; ``report`` gets each new evaluation row (SAC
    runs, while they train) and the last one with ``finished``. Returns the checkpoint."""
    folder = Path(folder)
    resume, steps, minutes = _remaining(run, folder)
    last = {"step": -1.0}

    def on_log(_row: dict) -> None:
        rows = _eval_rows(folder)
        if rows and rows[-1]["step"] > last["step"] and report is not None:
            last.update(rows[-1])
            report(dict(rows[-1]))

    if (steps is None or steps > 0) and (minutes is None or minutes > 0):
        registry.train(run.algo, run.eat_config(), folder, steps=steps, minutes=minutes, seed=run.seed,
                       device=run.device, progress=False, resume=resume, overrides=run.params,
                       on_log=on_log if report is not None else None)
    ckpt = checkpoint_of(run, folder)
    _write_marker(folder, run, "finished", checkpoint=ckpt.name if ckpt else None)
    if report is not None:
        rows = _eval_rows(folder)
        report({**{k: math.nan for k in EVAL_COLUMNS}, **(rows[-1] if rows else {}), "finished": True})
    return ckpt


def _trainable(tune_config: dict) -> None:
    """One Ray Tune trial: ``train_run`` with Tune's report (a top-level function so workers import it)."""
    import torch  # noqa: PLC0415
    from ray import tune  # noqa: PLC0415

    torch.set_num_threads(max(1, int(tune_config.get("threads", 1))))
    trial = tune_config["trial"]
    train_run(Run(**trial["run"]), trial["dir"], tune.report)


# --- the sweep ------------------------------------------------------------------------------------------------
def plan_runs(sweep: Sweep) -> dict[str, str]:
    """Per run: ``stored`` (its folder has a finished run of the same settings), ``resume`` (a SAC run interrupted
    after a checkpoint) or ``new``. A folder holding a finished run of other settings is an error (one line)."""
    plan = {}
    for run in sweep.runs:
        folder = sweep.out / run.name
        marker = read_marker(folder)
        if marker is not None:
            had = Run(**marker["run"]).identity()
            want = run.identity()
            if had != want:
                key = next(k for k in want if had.get(k) != want[k])
                raise SweepError(f"{run.name}: {folder} holds a finished run with another {key} ({had[key]} "
                                 f"instead of {want[key]}); remove it or give another out")
            plan[run.name] = "stored"
            continue
        resume, steps, minutes = _remaining(run, folder)
        if resume and (steps is not None and steps <= 0 or minutes is not None and minutes <= 0):
            ckpt = checkpoint_of(run, folder)  # an `eat train` folder that already used its budget
            _write_marker(folder, run, "finished", checkpoint=ckpt.name if ckpt else None)
            plan[run.name] = "stored"
        else:
            plan[run.name] = "resume" if resume else "new"
    return plan


def run_sweep(sweep: Sweep, address: str | None = None, *, echo: Callable[[str], None] = print) -> list[dict]:
    """Train every run not yet finished as a Ray Tune trial (``address``: None, a local Ray instance; ``auto`` or
    ``ray://HOST:PORT``, a cluster), then install checkpoints (``install``) and write ``OUT/summary.{md,csv}``.
    Returns the summary rows."""
    plan = plan_runs(sweep)
    out = sweep.out.resolve()
    todo = [r for r in sweep.runs if plan[r.name] != "stored"]
    status = {r.name: "stored" for r in sweep.runs if plan[r.name] == "stored"}
    errors: dict[str, str] = {}
    if todo:
        from .cluster import connect  # noqa: PLC0415 - optional

        connect(address)
        from ray import tune  # noqa: PLC0415

        es = sweep.early_stopping
        scheduler = None
        if es is not None:
            from ray.tune.schedulers import ASHAScheduler  # noqa: PLC0415

            max_t = max(r.steps for r in todo) if all(r.steps for r in todo) else 10**9
            scheduler = ASHAScheduler(time_attr="step", metric=es["metric"],
                                      mode="min" if es["metric"] in LOWER_IS_BETTER else "max", max_t=max_t,
                                      grace_period=es["grace_steps"], reduction_factor=es["reduction_factor"])
        threads = max(1, int(sweep.cpus_per_run))
        space = {"trial": tune.grid_search([{"run": r.to_dict(), "dir": str(out / r.name)} for r in todo]),
                 "threads": threads}
        echo(f"sweep: {len(todo)} runs to train ({sum(plan[r.name] == 'resume' for r in todo)} resumed), "
             f"{len(status)} stored -> {out}")
        tuner = tune.Tuner(
            tune.with_resources(_trainable, {"cpu": sweep.cpus_per_run, "gpu": sweep.gpus_per_run}),
            param_space=space,
            tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=sweep.max_concurrent,
                                        trial_name_creator=lambda t: t.config["trial"]["run"]["name"],
                                        trial_dirname_creator=lambda t: t.config["trial"]["run"]["name"]),
            run_config=tune.RunConfig(name=time.strftime("tune-%Y%m%d-%H%M%S"), storage_path=str(out / "_tune"),
                                      verbose=0, failure_config=tune.FailureConfig(max_failures=0)))
        for res in tuner.fit():
            run = Run(**res.config["trial"]["run"])
            if res.error is not None:
                errors[run.name] = f"{type(res.error).__name__}: {res.error}".splitlines()[0][:300]
                status[run.name] = "failed"
            elif (res.metrics or {}).get("finished"):
                status[run.name] = "resumed" if plan[run.name] == "resume" else "trained"
            else:  # ASHA stopped it: keep what it has, and do not redo it
                ckpt = checkpoint_of(run, out / run.name)
                _write_marker(out / run.name, run, "stopped", checkpoint=ckpt.name if ckpt else None)
                status[run.name] = "stopped early"
            echo(f"{run.name}: {status[run.name]}" + (f" ({errors[run.name]})" if run.name in errors else ""))
    if sweep.install is not None:
        for run in sweep.runs:
            if status.get(run.name) != "failed":
                dest = install_checkpoint(run, out / run.name, sweep.install)
                if dest is not None:
                    echo(f"installed {run.name} -> {dest}")
    rows = [summary_row(run, out / run.name, status.get(run.name, "failed"), errors.get(run.name))
            for run in sweep.runs]
    write_summary(rows, out)
    return rows


def install_checkpoint(run: Run, folder: Path, install: str) -> Path | None:
    """Copy the run's checkpoint to ``install`` as ``{algo}-n{nodes}.{ext}`` (a SAC policy stored as float16, as
    the shipped ones are); ``install = "shipped"`` is the package's own checkpoint folder."""
    src = checkpoint_of(run, folder)
    if src is None:
        return None
    algo = registry.get(run.algo)
    dest = (registry.shipped_checkpoint(run.algo, run.nodes) if install == "shipped"
            else Path(install) / f"{algo.name}-n{run.nodes}.{algo.checkpoint_ext}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if algo.family == "sac":
        from ..algos.sac_policy import shrink_checkpoint  # noqa: PLC0415

        shrink_checkpoint(src, dest)
    else:
        shutil.copy(src, dest)
    return dest


SUMMARY_COLUMNS = ("run", "algo", "nodes", "rate", "rate_max", "seed", "status", "env_steps", "best_mean_reward",
                   "efficiency", "mean_response_s", "checkpoint")


def summary_row(run: Run, folder: Path, status: str, error: str | None = None) -> dict:
    """One row of the summary: the run's evaluation with the highest mean reward (validation seeds)."""
    rows = [r for r in _eval_rows(folder) if r.get("mean_reward") == r.get("mean_reward")]
    best = max(rows, key=lambda r: r["mean_reward"]) if rows else {}
    ckpt = checkpoint_of(run, folder)
    return {"run": run.name, "algo": run.algo, "nodes": run.nodes, "rate": run.rate, "rate_max": run.rate_max,
            "seed": run.seed, "status": status if error is None else f"failed: {error}",
            "env_steps": int(rows[-1]["step"]) if rows else None, "best_mean_reward": best.get("mean_reward"),
            "efficiency": best.get("efficiency"), "mean_response_s": best.get("mean_response_s"),
            "checkpoint": str(ckpt) if ckpt else None}


def summary_markdown(rows: list[dict]) -> str:
    fmt = lambda v, f: "" if v is None or v != v else f.format(v)  # noqa: E731
    lines = ["| run | status | env steps | best mean reward (higher is better) | efficiency at best (quality / "
             "model s, higher is better) | mean response at best (model s, lower is better) | checkpoint |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['status']} | {fmt(r['env_steps'], '{:,}')} | "
                     f"{fmt(r['best_mean_reward'], '{:.1f}')} | {fmt(r['efficiency'], '{:.5f}')} | "
                     f"{fmt(r['mean_response_s'], '{:.1f}')} | {r['checkpoint'] or ''} |")
    return ("Best evaluation of each run on the validation seeds (1,000,000..; `eat evaluate` uses held-out seeds "
            "2,000,000..).\n\n" + "\n".join(lines) + "\n")


def write_summary(rows: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "summary.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    (out / "summary.md").write_text(summary_markdown(rows))
