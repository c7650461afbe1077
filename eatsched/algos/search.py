"""Genetic and Harmony search over open-loop action sequences (paper VI-A, the meta-heuristic baselines).

A candidate is a fixed sequence of ``horizon`` (2048) action vectors, genes in [-1, 1]. Replaying it, step t
of an episode gets action ``t mod horizon``: past the horizon the sequence starts over (cyclic), so a long
run of "wait" at its end cannot stall the cluster until the time limit. Episodes here take about 60-100
decisions (the simulator jumps over idle time), so the cyclic rule rarely matters.

Fitness = mean episode return of replaying the sequence from each episode's start on a fixed set of training
workloads (seeds ``first_train_seed ..``, drawn exactly as ``EATEnv.reset(seed=s)`` draws them). A whole
population is scored at once in one ``BatchedEATEnv`` with one env per (individual, seed).

* Genetic: PyGAD with the paper's settings (population 64, 32 generations, 10 parents, crossover
  probability 1, gene mutation probability 0.1, 1 elite). Mutation replaces a gene by a uniform draw in
  [-1, 1] (PyGAD's random mutation on the gene space [-1, 1]), vectorized, from PyGAD's own generator.
* Harmony: Geem et al. (2001), our implementation: memory of 64 harmonies, 64 improvisations. Each gene
  of a new harmony comes with probability HMCR (0.8) from the same gene of a random memory member, and is
  then pitch-adjusted with probability PAR (0.2) by ``bandwidth * U(-1, 1)``, clipped to [-1, 1]; otherwise
  (1 - HMCR) it is drawn uniformly in [-1, 1]. Bandwidth 1 on genes in [-1, 1] lets an adjustment move a
  gene by up to half its range. A new harmony replaces the worst member if it is better.

Budgets: both None runs the paper's generations / improvisations; ``steps`` (env steps spent in training
episodes) or ``minutes`` instead keep searching until the budget is used, checked after every generation
(or improvisation batch). The checkpoint is written in every case, also after Ctrl-C.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from gymnasium.utils import seeding

from ..core.config import EATConfig
from ..core.policy import Policy
from ..core.seeds import SEARCH_TRAIN_SEED0
from ..core.workload import make_arrivals
from ..sim.vector import BatchedEATEnv
from . import registry
from .training import EVAL_COLUMNS, TRAIN_COLUMNS, Budget, CsvLog, EvalLines, tensorboard, validate


@dataclass(frozen=True)
class SearchArgs:
    """Hyperparameters of both searches (paper VI-A values as defaults)."""

    horizon: int = 2048
    """length of the open-loop action sequence (steps)"""
    train_seeds: int = 16
    """number of fixed training workloads the fitness averages over"""
    first_train_seed: int = SEARCH_TRAIN_SEED0
    """workload seeds first_train_seed .. + train_seeds - 1 (``core.seeds``: disjoint from validation and held out)"""
    # --- genetic (PyGAD) ---
    population: int = 64
    """genetic: solutions per population"""
    generations: int = 32
    """genetic: generations (the default budget)"""
    parents_mating: int = 10
    """genetic: parents selected for mating each generation"""
    crossover_probability: float = 1.0
    """genetic: probability that a parent pair is crossed over (single point)"""
    mutation_probability: float = 0.1
    """genetic: per-gene mutation probability"""
    elitism: int = 1
    """genetic: best solutions copied unchanged into the next generation"""
    # --- harmony ---
    memory_size: int = 64
    """harmony: harmony memory size (HMS)"""
    improvisations: int = 64
    """harmony: new harmonies improvised (the default budget)"""
    hmcr: float = 0.8
    """harmony: memory consideration rate"""
    par: float = 0.2
    """harmony: pitch adjustment rate"""
    bandwidth: float = 1.0
    """harmony: pitch adjustment bandwidth (a gene moves by bandwidth * U(-1, 1), then is clipped to [-1, 1])"""
    improvise_batch: int = 1
    """harmony: harmonies improvised from the same memory before it is updated (1 = classic sequential HS)"""
    # --- logging ---
    eval_every: int = 8
    """evaluate the best sequence on held-out seeds every this many generations / improvisation batches"""
    eval_episodes: int = 10
    """held-out episodes per evaluation"""

    def __post_init__(self):
        if self.horizon < 1 or self.train_seeds < 1 or self.population < 2 or self.memory_size < 1:
            raise ValueError("horizon, train_seeds, memory_size must be >= 1 and population >= 2")
        if not 1 <= self.parents_mating <= self.population or not 0 <= self.elitism <= self.population:
            raise ValueError("parents_mating must be in [1, population] and elitism in [0, population]")
        for name in ("crossover_probability", "mutation_probability", "hmcr", "par"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.improvise_batch < 1 or self.eval_every < 1 or self.eval_episodes < 1:
            raise ValueError("improvise_batch, eval_every and eval_episodes must be >= 1")


# --- fitness: many sequences x training workloads in one batched env ---------------------------------
class _FixedWorkloadEnvs(BatchedEATEnv):
    """A ``BatchedEATEnv`` whose env b always replays workload ``b mod S`` of a fixed list (also on autoreset)."""

    def __init__(self, num_envs: int, config: EATConfig, workloads: tuple[np.ndarray, ...]):
        super().__init__(num_envs, config, copy_obs=False)
        self._workloads = workloads

    def next_workloads(self, idx: np.ndarray):
        arrival, patches, models, counts = self._workloads
        q = idx % len(counts)
        return arrival[q], patches[q], models[q], counts[q]


class SequenceFitness:
    """Mean episode return of open-loop sequences on fixed workloads; counts the env steps it spends."""

    def __init__(self, config: EATConfig, seeds: list[int]):
        self.config = config
        self.seeds = list(seeds)
        arrivals = make_arrivals(config)
        ws = [arrivals.sample(seeding.np_random(s)[0]) for s in self.seeds]  # as EATEnv.reset(seed=s) draws
        t = max(len(w) for w in ws)
        arrival = np.full((len(ws), t), np.inf)
        patches = np.zeros((len(ws), t), np.int64)
        models = np.zeros((len(ws), t), np.int64)
        for q, w in enumerate(ws):
            arrival[q, : len(w)], patches[q, : len(w)], models[q, : len(w)] = w.arrival, w.patches, w.models
        self._workloads = (arrival, patches, models, np.array([len(w) for w in ws], np.int64))
        self._envs: dict[int, _FixedWorkloadEnvs] = {}
        self.env_steps = 0
        self.episodes = 0
        self.last_mean_length = 0.0

    def __call__(self, sequences: np.ndarray) -> np.ndarray:
        """Fitness of each sequence in ``sequences`` (P, horizon, action_dim) -> (P,)."""
        p, horizon, _ = sequences.shape
        s = len(self.seeds)
        n = p * s
        if n not in self._envs:
            self._envs[n] = _FixedWorkloadEnvs(n, self.config, self._workloads)
        env = self._envs[n]
        env.reset()
        owner = np.repeat(np.arange(p), s)  # env b = individual b // S on workload b % S
        returns = np.zeros(n)
        lengths = np.zeros(n, np.int64)
        alive = np.ones(n, bool)
        t = 0
        while alive.any():
            _, rewards, terminated, truncated, _ = env.step(sequences[owner, t % horizon])
            returns += np.where(alive, rewards, 0.0)
            t += 1
            ended = alive & (terminated | truncated)
            lengths[ended] = t
            alive &= ~ended
        self.env_steps += int(lengths.sum())
        self.episodes += n
        self.last_mean_length = float(lengths.mean())
        return returns.reshape(p, s).mean(axis=1)


# --- the policy --------------------------------------------------------------------------------------
class SequencePolicy(Policy):
    """Replays a fixed action sequence: step t of an episode gets ``sequence[t mod horizon]``."""

    def __init__(self, config: EATConfig, sequence: np.ndarray, algo: str = "sequence", fitness: float = float("nan")):
        super().__init__(config)
        sequence = np.asarray(sequence, np.float32)
        if sequence.ndim != 2 or sequence.shape[1] != config.action_dim:
            raise ValueError(f"sequence must have shape (horizon, {config.action_dim}), got {sequence.shape}")
        self.sequence = np.clip(sequence, -1.0, 1.0)
        self.name = algo
        self.fitness = fitness
        self.t = 0

    def reset(self, seed: int | None = None) -> None:
        self.t = 0

    def act(self, observation, info):
        a = self.sequence[self.t % len(self.sequence)].copy()
        self.t += 1
        return a


# --- the two searches --------------------------------------------------------------------------------
class _Run:
    """Logging, evaluation and budget bookkeeping shared by both searches."""

    def __init__(self, algo: str, config: EATConfig, out: Path, args: SearchArgs, budget: Budget, progress: bool):
        self.algo, self.config, self.out, self.args, self.budget = algo, config, out, args, budget
        self.fitness = SequenceFitness(config, range(args.first_train_seed, args.first_train_seed + args.train_seeds))
        self.train_log = CsvLog(out / "train_log.csv", TRAIN_COLUMNS)
        self.eval_log = CsvLog(out / "eval_log.csv", EVAL_COLUMNS)
        self.tb = tensorboard(out / "tb")
        self.best = np.zeros((args.horizon, config.action_dim), np.float32)
        self.best_fitness = -np.inf
        self.initial_best = -np.inf
        self.rounds = 0
        self._last_eval_step = -1
        self.total_rounds = 0  # the paper's budget in generations / improvisation batches (0: steps or minutes)
        self._progress = _progress_bar(progress, f"{algo} N={config.nodes} rate={config.rate}")
        self.eval_lines = EvalLines(algo, not progress)  # one plain line per evaluation when there is no bar

    def offer(self, sequences: np.ndarray, fitness: np.ndarray) -> None:
        i = int(np.argmax(fitness))
        if fitness[i] > self.best_fitness:
            self.best_fitness = float(fitness[i])
            self.best = sequences[i].astype(np.float32).copy()

    def log_round(self, final: bool = False) -> None:
        """One row per generation / improvisation batch; an evaluation every ``eval_every`` rounds."""
        f = self.fitness
        if not final:
            self.rounds += 1
            self.train_log.write(step=f.env_steps, episodes=f.episodes, episode_reward=self.best_fitness,
                                 episode_length=f.last_mean_length, wall_s=round(self.budget.elapsed_s, 3))
            if self.tb is not None:
                self.tb.add_scalar("train/best_fitness", self.best_fitness, f.env_steps)
        due = self.rounds % self.args.eval_every == 0 if not final else self._last_eval_step != f.env_steps
        if due:
            self._last_eval_step = f.env_steps
            policy = SequencePolicy(self.config, self.best, self.algo, self.best_fitness)
            row = validate(policy, self.config, self.args.eval_episodes)
            self.eval_log.write(step=f.env_steps, **row)
            self.eval_lines(f.env_steps, row)
            if self.tb is not None:
                for k, v in row.items():
                    self.tb.add_scalar(f"eval/{k}", v, f.env_steps)
        if self._progress is not None:
            prog, bar = self._progress
            prog.update(bar, completed=self.fraction(), best=f"{self.best_fitness:.2f}")

    def fraction(self) -> float:
        if self.total_rounds:
            return min(1.0, self.rounds / self.total_rounds)
        return self.budget.fraction(self.fitness.env_steps)

    def finish(self) -> Path:
        self.log_round(final=True)
        self.train_log.close()
        self.eval_log.close()
        if self.tb is not None:
            self.tb.close()
        if self._progress is not None:
            self._progress[0].stop()
        return save_sequence(self.out / "policy.npz", self.algo, self.config, self.best, self.best_fitness, self.args,
                             initial_fitness=self.initial_best)


def _run_genetic(run: _Run, seed: int, max_generations: int | None) -> None:
    import pygad  # noqa: PLC0415 - optional dependency (extra "learn")

    args, cfg = run.args, run.config
    shape = (args.horizon, cfg.action_dim)

    def fitness_batch(ga, solutions, indices):
        seqs = np.asarray(solutions, np.float32).reshape(len(solutions), *shape)
        fit = run.fitness(seqs)
        if ga.generations_completed == 0 and run.initial_best == -np.inf:
            run.initial_best = float(fit.max())
        run.offer(seqs, fit)
        return fit.tolist()

    def mutate(offspring, ga):
        # PyGAD's random mutation by replacement on the gene space [-1, 1], vectorized (its per-gene Python
        # loop costs seconds per generation at 2048 x 12 genes); draws come from PyGAD's own generator.
        hit = ga.numpy_random_generator.random_sample(offspring.shape) < args.mutation_probability
        offspring[hit] = ga.numpy_random_generator.uniform(-1.0, 1.0, int(hit.sum()))
        return offspring

    def on_generation(ga):
        run.log_round()
        if run.budget.exhausted(run.fitness.env_steps) and max_generations is None:
            return "stop"
        return None

    ga = pygad.GA(
        num_generations=max_generations if max_generations is not None else 10**9,
        num_parents_mating=args.parents_mating,
        fitness_func=fitness_batch,
        fitness_batch_size=args.population,
        sol_per_pop=args.population,
        num_genes=args.horizon * cfg.action_dim,
        init_range_low=-1.0,  # PyGAD draws the initial population (its own generator, seeded below): passing
        init_range_high=1.0,  # one in costs seconds of gene-by-gene validation at 2048 x 12 genes
        gene_type=np.float32,
        parent_selection_type="sss",
        keep_elitism=args.elitism,
        crossover_type="single_point",
        crossover_probability=args.crossover_probability,
        mutation_type=mutate,
        mutation_probability=args.mutation_probability,
        on_generation=on_generation,
        random_seed=seed,
        suppress_warnings=True,
    )
    ga.run()


def _improvise(memory: np.ndarray, n: int, args: SearchArgs, rng: np.random.Generator) -> np.ndarray:
    """n new harmonies from the memory (HMS, horizon, action_dim): memory consideration, pitch adjustment,
    random selection, gene by gene."""
    hms = memory.shape[0]
    shape = (n, *memory.shape[1:])
    donor = rng.integers(0, hms, shape)
    gene = np.indices(memory.shape[1:])
    from_memory = memory[donor, gene[0], gene[1]]
    adjust = rng.random(shape) < args.par
    from_memory = np.where(adjust, from_memory + args.bandwidth * rng.uniform(-1.0, 1.0, shape), from_memory)
    fresh = rng.uniform(-1.0, 1.0, shape)
    new = np.where(rng.random(shape) < args.hmcr, from_memory, fresh)
    return np.clip(new, -1.0, 1.0).astype(np.float32)


def _run_harmony(run: _Run, seed: int, max_improvisations: int | None) -> None:
    args, cfg = run.args, run.config
    rng = np.random.default_rng(seed)
    memory = rng.uniform(-1.0, 1.0, (args.memory_size, args.horizon, cfg.action_dim)).astype(np.float32)
    scores = run.fitness(memory)
    run.initial_best = float(scores.max())
    run.offer(memory, scores)
    run.log_round()
    done = 0
    while True:
        n = args.improvise_batch if max_improvisations is None else min(args.improvise_batch,
                                                                        max_improvisations - done)
        if n <= 0:
            break
        new = _improvise(memory, n, args, rng)
        fit = run.fitness(new)
        for h, f in zip(new, fit, strict=True):
            worst = int(np.argmin(scores))
            if f > scores[worst]:
                memory[worst], scores[worst] = h, f
        run.offer(new, fit)
        done += n
        run.log_round()
        if max_improvisations is None and run.budget.exhausted(run.fitness.env_steps):
            break


def train_search(algo: str, config: EATConfig, out, *, steps: int | None = None, minutes: float | None = None,
                 seed: int = 0, device: str = "cpu", progress: bool = True, resume: bool = False,
                 overrides: dict | None = None) -> Path:
    """Run Genetic or Harmony search on ``config``; write ``out/policy.npz``, ``train_log.csv``, ``eval_log.csv``
    and TensorBoard files under ``out/tb/``. Returns the checkpoint path. ``overrides``: ``SearchArgs`` fields;
    ``device`` is unused (the search runs the simulator only)."""
    if resume:
        raise ValueError(f"--resume: a {algo} run cannot be resumed; start a new --out")
    args = SearchArgs(**(overrides or {}))
    budget = Budget(steps, minutes)  # both None: only the paper's generation / improvisation count below
    paper_budget = steps is None and minutes is None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = _Run(algo, config, out, args, budget, progress)
    if paper_budget:
        batches = -(-args.improvisations // args.improvise_batch)
        run.total_rounds = args.generations if algo == "genetic" else 1 + batches
    try:
        if algo == "genetic":
            _run_genetic(run, seed, args.generations if paper_budget else None)
        else:
            _run_harmony(run, seed, args.improvisations if paper_budget else None)
    except KeyboardInterrupt:
        pass  # keep what was found: the checkpoint is written below
    return run.finish()


# --- checkpoints -------------------------------------------------------------------------------------
def save_sequence(path: Path, algo: str, config: EATConfig, sequence: np.ndarray, fitness: float, args: SearchArgs,
                  initial_fitness: float = float("nan")) -> Path:
    """``policy.npz``: the sequence, the full config (JSON), the algorithm, its fitness and search settings."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, sequence=np.asarray(sequence, np.float32), config=np.array(json.dumps(config.to_dict())),
             algo=np.array(algo), best_fitness=np.float64(fitness), initial_fitness=np.float64(initial_fitness),
             args=np.array(json.dumps(asdict(args))))
    tmp.replace(path)  # never leave a half-written checkpoint behind
    return path


def load_search(algo: str, config: EATConfig, path: Path, seed: int = 0) -> Policy:
    """The sequence policy of a ``policy.npz`` (``registry.make_policy`` finds the file)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            saved = json.loads(str(z["config"]))
            saved_algo = str(z["algo"])
            sequence = z["sequence"]
            fitness = float(z["best_fitness"])
    except (KeyError, ValueError, OSError) as e:
        # numpy's own message may advise allow_pickle (unsafe, and wrong here): say only what the file is not
        raise ValueError(f"{path} is not a {algo} checkpoint of this project ({type(e).__name__})") from None
    registry.check_compatible(algo, saved, config, path, saved_algo)
    policy = SequencePolicy(config, sequence, algo, fitness)
    policy.trained_config = saved
    return policy


def _progress_bar(enabled: bool, description: str):
    if not enabled:
        return None
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("best fitness {task.fields[best]}"),
                    TimeElapsedColumn(), transient=False)
    bar = prog.add_task(description, total=1.0, best="-")
    prog.start()
    return prog, bar
