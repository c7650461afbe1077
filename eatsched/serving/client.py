"""A thin HTTP client of the host (``eat submit``, ``eat demo``, tests).

Times in the host's answers (``wait_s``, ``init_s``, ``exec_s``, ``response_s``, ``busy_for_s``) are wall seconds;
the policy's clock is model seconds = wall seconds / the host's ``time_scale`` (``GET /v1/cluster``)."""

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

    def ready(self) -> dict:
        """``GET /readyz``: the host's readiness (``ready`` is False while it warms up its policy)."""
        r = self.http.get("/readyz")
        if r.status_code not in (200, 503):
            self._check(r)
        return r.json()

    def waiting_reason(self, task: dict) -> str:
        """Why ``task`` has not finished yet, in words (``waiting_reason`` on this host's cluster view)."""
        ready = self.ready()
        if not ready.get("ready", True):
            return "the host is warming up its policy; it decides nothing before it is ready"
        return waiting_reason(task, self.cluster())

    def wait(self, task_id: str, timeout: float = 600.0, poll: float = 0.2, on_wait=None,
             explain_every: float = 1.0) -> dict:
        """Poll until the task reached a terminal state (or the timeout passed). ``on_wait(reason)`` is called
        whenever the reason it has not finished (``waiting_reason``, asked at most every ``explain_every`` s)
        changes."""
        deadline = time.monotonic() + timeout
        said, asked = None, -explain_every
        while True:
            t = self.task(task_id)
            if t["state"] in TERMINAL or time.monotonic() > deadline:
                return t
            if on_wait is not None and time.monotonic() - asked >= explain_every:
                asked = time.monotonic()
                reason = self.waiting_reason(t)
                if reason != said:
                    on_wait(reason)
                    said = reason
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


def waiting_reason(task: dict, cluster: dict) -> str:
    """Why a task has not finished, from it and the cluster view: for a queued task whether enough servers are up
    ("needs 4 servers, 3 up") and idle, else that the policy holds it; for a running one where it runs."""
    k = int(task["patches"])
    if task["state"] == "running":
        return f"running on {' '.join(task['servers'])} ({task['steps']} steps, {k} patch{'es' if k > 1 else ''})"
    if task["state"] != "queued":
        return task["state"]
    up = sum(1 for s in cluster["servers"] if s["up"])
    idle = sum(1 for s in cluster["servers"] if s["up"] and not s["busy"])
    queued = cluster["queue_length"]
    ahead = f"; {queued - 1} other task{'s' if queued != 2 else ''} queued" if queued > 1 else ""
    if up < k:
        return f"queued: needs {k} servers, {up} up (start more workers){ahead}"
    if idle < k:
        return f"queued: needs {k} servers, {idle} of {up} up are idle{ahead}"
    return f"queued: {k} of {idle} idle servers would do; the policy ({cluster['policy']}) waits{ahead}"
