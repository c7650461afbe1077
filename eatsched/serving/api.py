"""The host's HTTP API (FastAPI; OpenAPI docs at /docs): tasks, cluster, metrics, web page, workers.

Errors are specific 4xx answers with a JSON body ``{"detail": message, "error": code}``:
400 malformed JSON, 401 missing token, 403 wrong token, 404 unknown task or worker, 409 wrong state
(image of an unfinished task, cancel of a started task), 413 body too large, 422 invalid field
(missing or too long prompt, patches not in {1, 2, 4, 8} or larger than the cluster, unknown model),
429 submission rate exceeded.

The request schemas parse JSON into typed fields (400, and 422 for a missing or mistyped field); every check of
a submission's values, and the rate limit, is the engine's gate (``Engine.admit``), whose ``Rejected`` is
answered like any other error here.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field

from .engine import SEED_LIMIT, SIZE_MAX, SIZE_MIN, SIZE_MULTIPLE, Rejected
from .host import Host
from .settings import HostSettings
from .store import FINISHED, QUEUED, STATES
from .webpage import PAGE

log = logging.getLogger("eatsched.api")


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str):
        self.status, self.error, self.detail = status, error, detail


# --- schemas ------------------------------------------------------------------------------------------
class TaskCreate(BaseModel):
    """A text-to-image task."""

    prompt: str = Field(..., description="what to draw", examples=["a lighthouse on a cliff at dawn"])
    negative_prompt: str | None = Field(None, description="what to avoid")
    patches: int = Field(1, description="k: the image is split into k row patches run on k servers at once")
    model: str | None = Field(None, description="model name (default: the host's first model)")
    # ranges are documented here and checked by the engine's gate (Engine.admit)
    seed: int | None = Field(None, description="random seed (default: drawn)",
                             json_schema_extra={"minimum": 0, "exclusiveMaximum": SEED_LIMIT})
    width: int | None = Field(None, json_schema_extra={"minimum": SIZE_MIN, "maximum": SIZE_MAX,
                                                       "multipleOf": SIZE_MULTIPLE})
    height: int | None = Field(None, json_schema_extra={"minimum": SIZE_MIN, "maximum": SIZE_MAX,
                                                        "multipleOf": SIZE_MULTIPLE})


class TaskAccepted(BaseModel):
    id: str
    state: str
    url: str


class TaskPublic(BaseModel):
    id: str
    prompt: str
    negative_prompt: str | None = None
    patches: int
    model: str
    seed: int
    width: int
    height: int
    state: str
    attempt: int
    steps: int | None = None
    servers: list[str] = []
    reload: bool | None = None
    queued_at: float
    started_at: float | None = None
    finished_at: float | None = None
    init_s: float | None = None
    exec_s: float | None = None
    wait_s: float | None = None
    response_s: float | None = None
    predicted_init_s: float | None = None
    predicted_exec_s: float | None = None
    quality_estimate: float | None = None
    quality_measured: float | None = None
    image_url: str | None = None


class TaskPage(BaseModel):
    data: list[TaskPublic]
    count: int
    offset: int
    limit: int


class WorkerRegister(BaseModel):
    id: str = Field(..., min_length=1, max_length=128)
    speed: float = Field(1.0, gt=0)
    addr: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    backend: str = "simulated"
    running: str | None = None


class Heartbeat(BaseModel):
    running: str | None = None


class WorkerResult(BaseModel):
    key: str
    attempt: int
    task_id: str
    rank: int
    init_s: float | None = None
    exec_s: float | None = None
    reloaded: bool = False
    clip_score: float | None = None
    image_png: str | None = None  # base64
    error: str | None = None


async def require_token(request: Request) -> None:
    """Bearer-token check for write endpoints and workers (no-op without a token). Async: FastAPI would run a
    plain function in a thread pool, which costs more than the check."""
    token = request.app.state.settings.token
    if not token:
        return
    auth = request.headers.get("authorization", "")
    if not auth.lower().startswith("bearer "):
        raise ApiError(401, "missing_token", "this endpoint needs 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(auth[7:].strip().encode(), token.encode()):
        raise ApiError(403, "wrong_token", "the bearer token is not valid")


Auth = Annotated[None, Depends(require_token)]


class BodyLimit:
    """Pure ASGI middleware: 413 for a public request whose declared or streamed body exceeds ``max_bytes``
    (worker results, which carry images, are exempt)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH") or \
                scope["path"].startswith("/v1/workers/"):
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                return await self._reject(send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return msg

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._reject(send)

    async def _reject(self, send):
        body = json.dumps({"detail": f"body larger than {self.max_bytes} bytes", "error": "body_too_large"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


# --- the app ------------------------------------------------------------------------------------------
def create_app(settings: HostSettings) -> FastAPI:
    """The host as an ASGI app; the engine starts with the app's lifespan."""
    host = Host(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await host.start()
        log.info("host up: policy %s, %d nodes, data in %s", host.policy_name, settings.nodes, settings.data_dir)
        yield
        await host.stop()

    app = FastAPI(title="eatsched host", version="0.1.0", lifespan=lifespan,
                  description="EAT serving system: submit text-to-image tasks, watch the cluster, fetch images.")
    app.state.host = host
    app.state.settings = settings
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    @app.exception_handler(ApiError)
    @app.exception_handler(Rejected)
    async def _api_error(request: Request, exc: ApiError | Rejected):
        return JSONResponse({"detail": exc.detail, "error": exc.error}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errs):
            return JSONResponse({"detail": "malformed JSON body", "error": "malformed_json"}, status_code=400)
        missing = [".".join(str(x) for x in e["loc"][1:]) for e in errs if e.get("type") == "missing"]
        if missing:
            return JSONResponse({"detail": f"missing field: {', '.join(missing)}", "error": "missing_field",
                                 "fields": missing}, status_code=422)
        msg = "; ".join(f"{'.'.join(str(x) for x in e['loc'][1:]) or 'body'}: {e['msg']}" for e in errs)
        return JSONResponse({"detail": msg, "error": "invalid_field"}, status_code=422)

    def task_or_404(task_id: str) -> dict:
        row = host.store.get(task_id)
        if row is None:
            raise ApiError(404, "unknown_task", f"no task {task_id!r}")
        return row

    # --- tasks ------------------------------------------------------------------------------------------
    @app.post("/v1/tasks", status_code=202, response_model=TaskAccepted, tags=["tasks"])
    async def submit_task(body: TaskCreate, request: Request, _: Auth):
        """Queue a task; it is stored durably before this answers."""
        client = request.client.host if request.client else "unknown"
        row = await host.submit_async(prompt=body.prompt, negative_prompt=body.negative_prompt, patches=body.patches,
                                      model=body.model, seed=body.seed, width=body.width, height=body.height,
                                      client=client)
        return {"id": row["id"], "state": QUEUED, "url": f"/v1/tasks/{row['id']}"}

    @app.get("/v1/tasks", response_model=TaskPage, tags=["tasks"])
    async def list_tasks(limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0),
                         state: str | None = Query(None, description=f"one of {', '.join(STATES)}")):
        """Tasks, newest first."""
        if state is not None and state not in STATES:
            raise ApiError(422, "bad_state", f"state must be one of {', '.join(STATES)}")
        rows, total = host.store.list(state=state, limit=limit, offset=offset)
        return {"data": [host.task_public(r) for r in rows], "count": total, "offset": offset, "limit": limit}

    @app.get("/v1/tasks/{task_id}", response_model=TaskPublic, tags=["tasks"])
    async def get_task(task_id: str):
        """State, times, chosen steps and servers, estimated and measured quality of a task."""
        return host.task_public(task_or_404(task_id))

    @app.get("/v1/tasks/{task_id}/image", tags=["tasks"], response_class=FileResponse,
             responses={200: {"content": {"image/png": {}}}})
    async def get_image(task_id: str):
        """The generated image (PNG) of a finished task."""
        row = task_or_404(task_id)
        if row["state"] != FINISHED:
            raise ApiError(409, "not_finished", f"task {task_id} is {row['state']}; its image is not ready")
        if not row["image_path"] or not Path(row["image_path"]).is_file():
            raise ApiError(404, "no_image", f"task {task_id} finished without an image")
        return FileResponse(row["image_path"], media_type="image/png")

    @app.delete("/v1/tasks/{task_id}", tags=["tasks"])
    async def cancel_task(task_id: str, _: Auth):
        """Cancel a task that has not started."""
        row = task_or_404(task_id)
        if not host.cancel(task_id):
            raise ApiError(409, "not_cancellable", f"task {task_id} is {row['state']}; only queued tasks can be "
                                                   "cancelled")
        return {"id": task_id, "state": "cancelled"}

    # --- cluster, metrics, page ---------------------------------------------------------------------------
    @app.get("/v1/cluster", tags=["cluster"])
    async def cluster():
        """Servers (busy/idle, loaded model, group, health), groups, workers, predictor fits, policy."""
        return host.cluster_public()

    @app.get("/metrics", response_class=PlainTextResponse, tags=["cluster"])
    async def metrics():
        """Prometheus text: queue length, tasks by state, response-time histogram, reloads, decisions."""
        return PlainTextResponse(host.metrics_text(), media_type="text/plain; version=0.0.4")

    @app.get("/healthz", tags=["cluster"])
    async def healthz():
        return {"ok": True, "epoch": host.epoch}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(PAGE)

    # --- workers ------------------------------------------------------------------------------------------
    def worker_or_404(worker_id: str):
        w = host.workers.get(worker_id)
        if w is None or not w.up:
            raise ApiError(404, "unknown_worker", f"worker {worker_id!r} is not registered; register again")
        return w

    @app.post("/v1/workers/register", tags=["workers"])
    async def register(body: WorkerRegister, _: Auth):
        """A worker joins (or rejoins) the cluster."""
        try:
            w = host.register(worker_id=body.id, speed=body.speed, addr=body.addr, port=body.port,
                              backend=body.backend, running=body.running)
        except ValueError as e:
            raise ApiError(409, "cluster_full", str(e)) from None
        return {"index": w.index, "heartbeat_s": settings.heartbeat_s, "epoch": host.epoch}

    @app.post("/v1/workers/{worker_id}/heartbeat", tags=["workers"])
    async def heartbeat(worker_id: str, body: Heartbeat, _: Auth):
        if not host.heartbeat(worker_id, body.running):
            raise ApiError(404, "unknown_worker", f"worker {worker_id!r} is not registered; register again")
        return {"ok": True}

    @app.get("/v1/workers/{worker_id}/job", tags=["workers"],
             responses={204: {"description": "no job within the wait"}})
    async def next_job(worker_id: str, _: Auth, wait: float = Query(10.0, ge=0, le=60)):
        """Long poll for this worker's next patch job."""
        worker_or_404(worker_id)
        env = await host.next_job(worker_id, wait)
        if env is None:
            worker_or_404(worker_id)
            return Response(status_code=204)
        return env

    @app.post("/v1/workers/{worker_id}/result", tags=["workers"])
    async def result(worker_id: str, body: WorkerResult, _: Auth):
        """A worker reports a finished (or failed) patch job with its measured times."""
        worker_or_404(worker_id)
        return {"accepted": host.on_result(worker_id, body.model_dump())}

    return app


def run_host(settings: HostSettings, *, log_level: str = "warning") -> None:
    """Serve until interrupted."""
    import uvicorn  # noqa: PLC0415

    app = create_app(settings)
    # long polls would otherwise hold a graceful shutdown for up to their full wait
    uvicorn.run(app, host=settings.bind, port=settings.port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=2)
