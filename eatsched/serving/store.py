"""Durable task store: SQLite (stdlib, WAL) for tasks and their state transitions; images on disk.

A task is acknowledged (202) only after its row is committed, so an accepted task survives a crash.
States: ``queued -> running -> finished``, ``running -> queued`` (its worker failed, or the host
restarted), ``queued -> cancelled``, ``running -> failed`` (its workers reported errors too often).
``attempt`` counts launches: a worker result is accepted only for the task's current attempt while it
is running, so a task finishes at most once.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

QUEUED, RUNNING, FINISHED, CANCELLED, FAILED = "queued", "running", "finished", "cancelled", "failed"
STATES = (QUEUED, RUNNING, FINISHED, CANCELLED, FAILED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    negative_prompt TEXT,
    patches INTEGER NOT NULL,
    model TEXT NOT NULL,
    seed INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    client TEXT,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    steps INTEGER,
    servers TEXT,
    reload INTEGER,
    init_s REAL,
    exec_s REAL,
    predicted_init_s REAL,
    predicted_exec_s REAL,
    quality_est REAL,
    clip_score REAL,
    image_path TEXT
);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state, seq);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    state TEXT NOT NULL,
    at REAL NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS transitions_task ON transitions(task_id);
"""

PUBLIC_COLUMNS = ("id", "prompt", "negative_prompt", "patches", "model", "seed", "width", "height", "state", "attempt",
                  "created_at", "started_at", "finished_at", "steps", "servers", "reload", "init_s", "exec_s",
                  "predicted_init_s", "predicted_exec_s", "quality_est", "clip_score")


class TaskStore:
    """One SQLite database plus an image folder under ``data_dir``. Thread-safe (one lock)."""

    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir)
        self.image_dir = self.data_dir / "images"
        self.image_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / "eat.sqlite"
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM tasks").fetchone()
        self._seq = int(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self, statements: list[tuple[str, tuple]]) -> list[int]:
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                counts = [cur.execute(sql, args).rowcount for sql, args in statements]
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            return counts

    # --- writes ---------------------------------------------------------------------------------------
    def add(self, task_id: str, **fields) -> dict:
        """Store one new task (queued). ``fields``: prompt, negative_prompt, patches, model, seed, width,
        height, client."""
        return self.add_many([{"id": task_id, **fields}])[0]

    def add_many(self, tasks: list[dict]) -> list[dict]:
        """Store several new tasks in one transaction (the host's group commit); returns their rows."""
        now = time.time()
        with self._lock:
            rows = []
            for t in tasks:
                self._seq += 1
                rows.append({**t, "seq": self._seq, "created_at": now, "state": QUEUED})
        self._tx_many([
            ("INSERT INTO tasks (id, seq, prompt, negative_prompt, patches, model, seed, width, height, client, state,"
             " created_at) VALUES (:id, :seq, :prompt, :negative_prompt, :patches, :model, :seed, :width, :height,"
             " :client, :state, :created_at)", rows),
            ("INSERT INTO transitions (task_id, state, at, detail) VALUES (?,?,?,NULL)",
             [(r["id"], QUEUED, now) for r in rows]),
        ])
        return rows

    def _tx_many(self, statements: list[tuple[str, list]]) -> None:
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                for sql, seq in statements:
                    cur.executemany(sql, seq)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    def start(self, task_id: str, *, steps: int, servers: list[str], reload: bool, predicted_init_s: float,
              predicted_exec_s: float, quality_est: float) -> int:
        """queued -> running; returns the new attempt number (0 if the task was not queued)."""
        now = time.time()
        n = self._tx([
            ("UPDATE tasks SET state=?, attempt=attempt+1, started_at=?, steps=?, servers=?, reload=?,"
             " predicted_init_s=?, predicted_exec_s=?, quality_est=? WHERE id=? AND state=?",
             (RUNNING, now, steps, json.dumps(servers), int(reload), predicted_init_s, predicted_exec_s, quality_est,
              task_id, QUEUED)),
            ("INSERT INTO transitions (task_id, state, at, detail) SELECT ?,?,?,? WHERE changes() = 1",
             (task_id, RUNNING, now, json.dumps({"servers": servers, "steps": steps}))),
        ])[0]
        if not n:
            return 0
        return int(self._db.execute("SELECT attempt FROM tasks WHERE id=?", (task_id,)).fetchone()[0])

    def finish(self, task_id: str, attempt: int, *, init_s: float, exec_s: float, image_png: bytes | None,
               clip_score: float | None) -> bool:
        """running (this attempt) -> finished. False if the task is not running this attempt (a stale or
        duplicate result): nothing changes, so a task finishes at most once."""
        path = None
        if image_png is not None:
            path = self.image_dir / f"{task_id}.png"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(image_png)
            tmp.replace(path)
        now = time.time()
        n = self._tx([
            ("UPDATE tasks SET state=?, finished_at=?, init_s=?, exec_s=?, clip_score=?, image_path=?"
             " WHERE id=? AND state=? AND attempt=?",
             (FINISHED, now, init_s, exec_s, clip_score, str(path) if path else None, task_id, RUNNING, attempt)),
            ("INSERT INTO transitions (task_id, state, at, detail) SELECT ?,?,?,? WHERE changes() = 1",
             (task_id, FINISHED, now, json.dumps({"attempt": attempt}))),
        ])[0]
        return bool(n)

    def requeue(self, task_id: str, reason: str) -> bool:
        """running -> queued (its worker failed). Keeps created_at: the task keeps its place."""
        now = time.time()
        n = self._tx([
            ("UPDATE tasks SET state=?, started_at=NULL, steps=NULL, servers=NULL, reload=NULL WHERE id=? AND state=?",
             (QUEUED, task_id, RUNNING)),
            ("INSERT INTO transitions (task_id, state, at, detail) SELECT ?,?,?,? WHERE changes() = 1",
             (task_id, QUEUED, now, reason)),
        ])[0]
        return bool(n)

    def fail(self, task_id: str, reason: str) -> bool:
        """running -> failed: the task gave up after repeated worker errors."""
        now = time.time()
        n = self._tx([
            ("UPDATE tasks SET state=? WHERE id=? AND state=?", (FAILED, task_id, RUNNING)),
            ("INSERT INTO transitions (task_id, state, at, detail) SELECT ?,?,?,? WHERE changes() = 1",
             (task_id, FAILED, now, reason)),
        ])[0]
        return bool(n)

    def cancel(self, task_id: str) -> bool:
        now = time.time()
        n = self._tx([
            ("UPDATE tasks SET state=? WHERE id=? AND state=?", (CANCELLED, task_id, QUEUED)),
            ("INSERT INTO transitions (task_id, state, at, detail) SELECT ?,?,?,? WHERE changes() = 1",
             (task_id, CANCELLED, now, None)),
        ])[0]
        return bool(n)

    def recover(self) -> list[dict]:
        """After a restart: running tasks go back to the queue; returns every queued task, oldest first."""
        for row in self._db.execute("SELECT id FROM tasks WHERE state=?", (RUNNING,)).fetchall():
            self.requeue(row["id"], "host restarted")
        rows = self._db.execute("SELECT * FROM tasks WHERE state=? ORDER BY seq", (QUEUED,)).fetchall()
        return [dict(r) for r in rows]

    # --- reads ----------------------------------------------------------------------------------------
    def get(self, task_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM tasks WHERE id=?", (task_id,)).fetchone()
        return dict(row) if row else None

    def list(self, *, state: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[dict], int]:
        where, args = ("WHERE state=?", (state,)) if state else ("", ())
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM tasks {where}", args).fetchone()[0]
            rows = self._db.execute(f"SELECT * FROM tasks {where} ORDER BY seq DESC LIMIT ? OFFSET ?",
                                    (*args, limit, offset)).fetchall()
        return [dict(r) for r in rows], int(total)

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state").fetchall()
        out = dict.fromkeys(STATES, 0)
        out.update({r[0]: int(r[1]) for r in rows})
        return out

    def transitions(self, task_id: str | None = None) -> list[dict]:
        with self._lock:
            if task_id is None:
                rows = self._db.execute("SELECT * FROM transitions ORDER BY id").fetchall()
            else:
                rows = self._db.execute("SELECT * FROM transitions WHERE task_id=? ORDER BY id", (task_id,)).fetchall()
        return [dict(r) for r in rows]
