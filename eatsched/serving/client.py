"""A thin HTTP client of the host (``eat submit``, ``eat demo``, tests)."""

from __future__ import annotations

import time

import httpx

TERMINAL = ("finished", "cancelled", "failed")
"""Task states that do not change any more."""


class HostError(RuntimeError):
    """The host answered with an error; ``status`` and ``error`` are its code and error name."""

    def __init__(self, status: int, error: str, detail: str):
        super().__init__(f"{status} {error}: {detail}")
        self.status, self.error, self.detail = status, error, detail


class Client:
    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None, timeout: float = 30.0):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check(self, r: httpx.Response) -> httpx.Response:
        if r.status_code >= 400:
            try:
                d = r.json()
                raise HostError(r.status_code, d.get("error", "error"), d.get("detail", r.text))
            except ValueError:
                raise HostError(r.status_code, "error", r.text) from None
        return r

    def submit(self, prompt: str, *, patches: int = 1, model: str | None = None, seed: int | None = None,
               negative_prompt: str | None = None) -> str:
        body = {"prompt": prompt, "patches": patches}
        for k, v in (("model", model), ("seed", seed), ("negative_prompt", negative_prompt)):
            if v is not None:
                body[k] = v
        return self._check(self.http.post("/v1/tasks", json=body)).json()["id"]

    def task(self, task_id: str) -> dict:
        return self._check(self.http.get(f"/v1/tasks/{task_id}")).json()

    def image(self, task_id: str) -> bytes:
        return self._check(self.http.get(f"/v1/tasks/{task_id}/image")).content

    def cluster(self) -> dict:
        return self._check(self.http.get("/v1/cluster")).json()

    def tasks(self, *, state: str | None = None, limit: int = 500, offset: int = 0) -> dict:
        params = {"limit": limit, "offset": offset} | ({"state": state} if state else {})
        return self._check(self.http.get("/v1/tasks", params=params)).json()

    def all_tasks(self) -> list[dict]:
        out, offset = [], 0
        while True:
            page = self.tasks(offset=offset)
            out += page["data"]
            offset += len(page["data"])
            if not page["data"] or offset >= page["count"]:
                return out

    def wait(self, task_id: str, timeout: float = 600.0, poll: float = 0.2) -> dict:
        """Poll until the task reached a terminal state (or the timeout passed)."""
        deadline = time.monotonic() + timeout
        while True:
            t = self.task(task_id)
            if t["state"] in TERMINAL or time.monotonic() > deadline:
                return t
            time.sleep(poll)

    def wait_all(self, ids: list[str], timeout: float = 600.0, poll: float = 0.3) -> dict[str, dict]:
        """Poll the task list until every id in ``ids`` reached a terminal state (or the timeout passes)."""
        want = set(ids)
        deadline = time.monotonic() + timeout
        while True:
            rows = {t["id"]: t for t in self.all_tasks() if t["id"] in want}
            if all(r["state"] in TERMINAL for r in rows.values()) and len(rows) == len(want):
                return rows
            if time.monotonic() > deadline:
                return rows
            time.sleep(poll)
