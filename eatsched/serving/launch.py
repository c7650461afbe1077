"""Start a host and simulated workers as local subprocesses (``eat demo``, tests, benchmarks).

Every process started here is stopped by ``LocalCluster.stop()`` (also on exceptions and Ctrl-C when
used as a context manager), by its process id: SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalCluster:
    """A host on 127.0.0.1 plus simulated workers ``w0 .. w{n-1}``, each its own process."""

    data_dir: Path
    nodes: int = 8
    workers: int | None = None  # how many to start (default: nodes)
    time_scale: float = 0.01
    policy: str = "eat"
    profile: str = "reference"
    token: str | None = None  # clients' token (the host's --token)
    worker_token: str | None = None  # workers' token (default: a fresh secret whenever ``token`` is set)
    public_read: bool = False  # the host's --public-read
    host_args: list[str] = field(default_factory=list)  # more ``eat serve`` options
    port: int = 0
    heartbeat_s: float = 0.5
    heartbeat_timeout_s: float = 3.0
    rate_limit: float = 0.0
    log_dir: Path | None = None
    host_proc: subprocess.Popen | None = None
    worker_procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.port = self.port or free_port()
        self.log_dir = Path(self.log_dir or self.data_dir / "logs")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.token and not self.worker_token:
            self.worker_token = secrets.token_urlsafe(24)  # workers and clients never share a credential

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _env(self, tokens: dict[str, str | None] | None = None) -> dict:
        """The children's environment: tokens travel here (not on command lines other users can read)."""
        env = dict(os.environ)
        env.pop("EAT_TOKEN", None)
        env.pop("EAT_WORKER_TOKEN", None)
        env.update({k: v for k, v in (tokens or {}).items() if v})
        env.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[2] / ".numba_cache"))
        return env

    def _spawn(self, args: list[str], log_name: str, tokens: dict[str, str | None] | None = None) -> subprocess.Popen:
        log = open(self.log_dir / log_name, "ab")  # noqa: SIM115 - owned by the child's lifetime
        return subprocess.Popen([sys.executable, "-m", "eatsched.cli", *args], stdout=log, stderr=subprocess.STDOUT,
                                env=self._env(tokens), start_new_session=True)

    @property
    def headers(self) -> dict:
        """A client's headers for this host (its token, if any)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    # --- host ---------------------------------------------------------------------------------------------
    def start_host(self, timeout: float = 120.0) -> dict:
        """Start ``eat serve`` and wait until it is ready (policy loaded and warmed up: ``/readyz`` is 200)."""
        args = ["serve", "--port", str(self.port), "--data-dir", str(self.data_dir), "--nodes", str(self.nodes),
                "--policy", self.policy, "--profile", self.profile, "--time-scale", str(self.time_scale),
                "--heartbeat", str(self.heartbeat_s), "--heartbeat-timeout", str(self.heartbeat_timeout_s),
                "--rate-limit", str(self.rate_limit), "--log-level", "info"]
        if self.public_read:
            args.append("--public-read")
        args += self.host_args
        self.host_proc = self._spawn(args, "host.log", {"EAT_TOKEN": self.token, "EAT_WORKER_TOKEN": self.worker_token})
        return self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 120.0) -> dict:
        """Wait until the host is ready (``GET /readyz`` 200: it answers 503 while it warms up its policy);
        returns its readiness (policy, warm-up wall seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.host_proc is not None and self.host_proc.poll() is not None:
                raise RuntimeError(f"the host exited with {self.host_proc.returncode}; see {self.log_dir / 'host.log'}")
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=1.0)
                if r.status_code == 200:
                    return r.json()
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"the host was not ready within {timeout} s; see {self.log_dir / 'host.log'}")

    def kill_host(self) -> None:
        """SIGKILL the host (a crash)."""
        if self.host_proc is not None:
            self.host_proc.kill()
            self.host_proc.wait()
            self.host_proc = None

    # --- workers ------------------------------------------------------------------------------------------
    def start_worker(self, worker_id: str, speed: float = 1.0) -> None:
        args = ["worker", "--host", self.url, "--id", worker_id, "--backend", "simulated", "--time-scale",
                str(self.time_scale), "--profile", self.profile, "--speed", str(speed)]
        self.worker_procs[worker_id] = self._spawn(args, f"worker-{worker_id}.log",
                                                   {"EAT_WORKER_TOKEN": self.worker_token or self.token})

    def start_workers(self, timeout: float = 60.0) -> None:
        n = self.workers if self.workers is not None else self.nodes
        for j in range(n):
            self.start_worker(f"w{j}")
        self.wait_workers(n, timeout)

    def wait_workers(self, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                c = httpx.get(f"{self.url}/v1/cluster", headers=self.headers, timeout=2.0).json()
                if sum(1 for w in c["workers"] if w["up"]) >= n:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{n} workers did not register within {timeout} s")

    def kill_worker(self, worker_id: str) -> None:
        """SIGKILL one worker (kill -9)."""
        p = self.worker_procs.pop(worker_id)
        p.kill()
        p.wait()

    # --- teardown -----------------------------------------------------------------------------------------
    def stop(self, grace: float = 3.0) -> None:
        procs = list(self.worker_procs.values()) + ([self.host_proc] if self.host_proc else [])
        for p in procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.worker_procs.clear()
        self.host_proc = None

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
