"""The host's HTTP API (FastAPI; OpenAPI docs at /docs): tasks, cluster, metrics, web page, workers.

Errors are specific 4xx answers with a JSON body ``{"detail": message, "error": code}``:
400 malformed JSON, 401 missing token, 403 wrong token (or a worker result for a job not dispatched to that
worker), 404 unknown task or worker, 409 wrong state (image of an unfinished task, cancel of a started task, a
stale or duplicate worker result), 413 body too large, 422 invalid field (missing or too long prompt, patches not
in {1, 2, 4, 8} or larger than the cluster, unknown model, a mistyped field: no coercion), 429 submission rate
exceeded. The OpenAPI document lists each route's statuses with this schema.

Access (``Guard``, before any body is read): clients present ``token`` to submit and cancel, and to read unless
``public_read``; workers present ``worker_token`` (else ``token``) on every /v1/workers route. Bodies are limited
on every route (``max_body_bytes``; worker results ``max_result_bytes``).

The request schemas parse JSON into typed fields (400, and 422 for a missing or mistyped field); every check of
a submission's values, and the rate limit, is the engine's gate (``Engine.admit``), whose ``Rejected`` is
answered like any other error here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from .engine import BLANK, SEED_LIMIT, SIZE_MAX, SIZE_MIN, SIZE_MULTIPLE, Rejected, is_utf8
from .executor import ResultRejected, decode_png
from .host import Host
from .settings import HostSettings
from .store import FINISHED, QUEUED, STATES
from .webpage import PAGE, TIMELINE_MINUTES, host_timeline, host_timeline_png, json_safe

log = logging.getLogger("eatsched.api")


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str):
        self.status, self.error, self.detail = status, error, detail


OFFSET_MAX = 2**53 - 1
"""largest ``offset`` of a task listing (a JSON number every client reads exactly; SQLite's limit is 2^63 - 1)"""


def _utf8(text: str) -> str:
    if not is_utf8(text):
        raise ValueError("not valid Unicode text (a lone surrogate?)")
    return text


Text = Annotated[str, AfterValidator(_utf8)]
"""A string UTF-8 can hold (the store, the logs and every JSON answer): no lone surrogates."""


def _json_int(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError("Input should be a JSON integer (true, \"2\" and the like are not)")
    return int(v) if isinstance(v, float) and v.is_integer() else v


JsonInt = Annotated[int, BeforeValidator(_json_int)]
"""An integer as JSON Schema has it: a JSON number without a fractional part (2 or 2.0); no coercion of booleans
or strings."""


# --- schemas ------------------------------------------------------------------------------------------
class ErrorBody(BaseModel):
    """Every error answer."""

    detail: str = Field(..., description="what went wrong, for people")
    error: str = Field(..., description="a stable code, for programs (e.g. missing_token, unknown_task)")
    fields: list[str] | None = Field(None, description="missing_field: the fields that are missing")


class TaskCreate(BaseModel):
    """A text-to-image task. No coercion: ``patches``, ``seed``, ``width``, ``height`` must be JSON integers.
    The prompt's length and the values of ``patches`` and ``model`` that this host takes are in its OpenAPI
    document; the engine's gate checks them (``Engine.admit``)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(..., description="what to draw (not only blanks)", examples=["a lighthouse on a cliff at dawn"],
                        json_schema_extra={"minLength": 1, "pattern": f"[^{BLANK.encode('unicode_escape').decode()}]"})
    negative_prompt: str | None = Field(None, description="what to avoid")
    patches: JsonInt = Field(1, description="k: the image is split into k row patches run on k servers at once")
    model: str | None = Field(None, min_length=1, description="model name (default: the host's first model)")
    # ranges are documented here and checked by the engine's gate (Engine.admit)
    seed: JsonInt | None = Field(None, description="random seed (default: drawn)",
                                   json_schema_extra={"minimum": 0, "exclusiveMaximum": SEED_LIMIT})
    width: JsonInt | None = Field(None, json_schema_extra={"minimum": SIZE_MIN, "maximum": SIZE_MAX,
                                                             "multipleOf": SIZE_MULTIPLE})
    height: JsonInt | None = Field(None, json_schema_extra={"minimum": SIZE_MIN, "maximum": SIZE_MAX,
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


_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class WorkerRegister(BaseModel):
    model_config = _STRICT

    id: str = Field(..., min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$")
    speed: float = Field(1.0, ge=0.01, le=100, description="speed factor c_j (1.0: the profile's reference GPU)")
    addr: Text = Field("127.0.0.1", min_length=1, max_length=255)
    port: JsonInt = Field(0, ge=0, le=65535)
    backend: Text = Field("simulated", max_length=64)
    running: Text | None = Field(None, max_length=256, description="key of the job it is still running")


class Heartbeat(BaseModel):
    model_config = _STRICT

    running: Text | None = Field(None, max_length=256, description="key of the job it is running")


class WorkerResult(BaseModel):
    """One member's result: the job's ``key``, ``attempt``, ``task_id``, ``rank`` and ``ticket`` as delivered."""

    model_config = _STRICT

    key: Text = Field(..., max_length=256)
    attempt: JsonInt = Field(..., ge=1)
    task_id: Text = Field(..., max_length=128)
    rank: JsonInt = Field(..., ge=0, le=7)
    ticket: Text = Field(..., max_length=128, description="the job's ticket, echoed")
    init_s: float | None = Field(None, ge=0, le=1e7)
    exec_s: float | None = Field(None, ge=0, le=1e7)
    reloaded: StrictBool = False
    clip_score: float | None = Field(None, ge=-1e6, le=1e6)
    image_png: str | None = Field(None, description="rank 0: the image, a base64 PNG")
    error: Text | None = Field(None, max_length=4000, description="the job failed: why")


class ResultAccepted(BaseModel):
    accepted: bool


# --- access and body limits, before the body is read ------------------------------------------------------
OPEN, READ, WRITE, WORKER = "open", "read", "write", "worker"


def route_access(method: str, path: str) -> str:
    """Who may call ``method path`` (a request path or an OpenAPI path template): workers (every /v1/workers
    route), clients writing (submit, cancel), clients reading (the rest of /v1 and /metrics), or anyone (the
    page, /healthz, /readyz, the OpenAPI document)."""
    if path.startswith("/v1/workers/"):
        return WORKER
    if path.startswith("/v1/tasks") and method in ("POST", "DELETE"):
        return WRITE
    if path.startswith("/v1/") or path == "/metrics":
        return READ
    return OPEN


def is_result_path(path: str) -> bool:
    return path.startswith("/v1/workers/") and path.endswith("/result")


class Guard:
    """Pure ASGI middleware in front of every route, deciding before the app reads a byte of the body:

    * the bearer token the route needs (``route_access``): 401 ``missing_token``, 403 ``wrong_token``; both
      tokens are compared in constant time (``hmac.compare_digest``);
    * the body size: 413 ``body_too_large`` for a Content-Length over the route's limit, and for a chunked body
      as soon as what streamed in passes it (the app then gets the body read so far, in one piece).

    An answer given here closes the connection (the body is never read). The scope gets ``eat.addresses``: whether
    the caller may see workers' addresses (it presented a valid token, or the host has no client token)."""

    def __init__(self, app, settings: HostSettings):
        self.app = app
        self.client = settings.token.encode() if settings.token else None
        self.worker = settings.worker_credential.encode() if settings.worker_credential else None
        self.public_read = settings.public_read
        self.max_body, self.max_result = settings.max_body_bytes, settings.max_result_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        access = route_access(scope["method"], path)
        auth = length = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                auth = value
            elif name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        has_body = chunked or (length is not None and length.strip(b" 0") != b"")
        client = worker = False
        if auth is not None and auth[:7].lower() == b"bearer ":
            presented = auth[7:].strip()
            client = self.client is not None and hmac.compare_digest(presented, self.client)
            worker = self.worker is not None and hmac.compare_digest(presented, self.worker)
        need = (self.worker if access == WORKER else self.client if access == WRITE
                else self.client if access == READ and not self.public_read else None)
        if need is not None and not (worker if access == WORKER else client):
            if auth is None or auth[:7].lower() != b"bearer ":
                return await _answer(send, 401, "missing_token", "this endpoint needs 'Authorization: Bearer "
                                     f"<{'worker ' if access == WORKER else ''}token>'", close=has_body,
                                     headers=[(b"www-authenticate", b"Bearer")])
            return await _answer(send, 403, "wrong_token", f"the bearer token is not valid for {path}",
                                 close=has_body)
        scope["eat.addresses"] = client or worker or self.client is None
        limit = self.max_result if is_result_path(path) else self.max_body
        if length is not None and (not length.strip().isdigit() or int(length) > limit):
            return await _answer(send, 413, "body_too_large", f"body larger than {limit} bytes", close=True)
        if chunked and length is None:
            chunks, size = [], 0
            while True:
                msg = await receive()
                if msg["type"] != "http.request":
                    return  # the client went away
                body = msg.get("body", b"")
                size += len(body)
                if size > limit:
                    return await _answer(send, 413, "body_too_large", f"body larger than {limit} bytes", close=True)
                chunks.append(body)
                if not msg.get("more_body", False):
                    break
            receive = _replay(b"".join(chunks), receive)
        return await self.app(scope, receive, send)


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # then whatever comes: a disconnect

    return replay


async def _answer(send, status: int, error: str, detail: str, *, close: bool, headers: list | None = None) -> None:
    body = json.dumps({"detail": detail, "error": error}).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]
    if close:
        hdrs.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


async def strict_query(request: Request) -> None:
    """Every route: a query parameter the route does not declare is a 422 (as an unknown body field is)."""
    if not request.scope.get("query_string"):
        return
    route = request.scope.get("route")
    known = _QUERY_NAMES.get(id(route))
    if known is None:
        known = _QUERY_NAMES[id(route)] = frozenset(p.alias for p in route.dependant.query_params)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise ApiError(422, "unknown_parameter", f"unknown query parameter: {', '.join(unknown)}"
                                                 + (f" (this route takes {', '.join(sorted(known))})" if known else ""))


_QUERY_NAMES: dict[int, frozenset[str]] = {}  # id(route) -> its query parameters (routes live as long as the app)


# --- the OpenAPI document: every status each route answers, with the error schema -----------------------------
ERROR_STATUS = {
    400: "malformed JSON body", 401: "no bearer token", 403: "wrong bearer token",
    404: "unknown task or worker", 409: "wrong state", 413: "body too large",
    422: "invalid field (missing, mistyped, out of range)", 429: "submission rate exceeded",
    503: "the host could not store a valid result; the task was re-queued",
}


def errors(*codes: int, **descriptions: str) -> dict:
    """``responses=`` of a route: each code with the error schema (and a description, by ``e<code>=``)."""
    return {c: {"model": ErrorBody, "description": descriptions.get(f"e{c}", ERROR_STATUS[c])} for c in codes}


def document(schema: dict, settings: HostSettings, patch_choices, models) -> dict:
    """Complete FastAPI's OpenAPI document: the bearer schemes and each operation's ``security``, 401/403 where a
    token is needed, 413 everywhere, 400 wherever there is a JSON body, 422 with the error schema (not FastAPI's
    list of validation errors), and this host's limits in ``TaskCreate``."""
    comps = schema.setdefault("components", {})
    schemas = comps.setdefault("schemas", {})
    schemas.setdefault("ErrorBody", ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}"))
    ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    client, worker = settings.token, settings.worker_credential
    comps["securitySchemes"] = {
        "clientToken": {"type": "http", "scheme": "bearer", "description": "the host's --token"},
        "workerToken": {"type": "http", "scheme": "bearer",
                        "description": "the host's --worker-token (else --token)"},
    }
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            access = route_access(method.upper(), path)
            scheme = ("workerToken" if access == WORKER and worker else
                      "clientToken" if client and (access == WRITE or (access == READ and not settings.public_read))
                      else None)
            responses = op.setdefault("responses", {})
            codes = [413] + ([401, 403] if scheme else []) + ([400] if "requestBody" in op else [])
            if scheme:
                op["security"] = [{scheme: []}]
            for code in codes:
                responses.setdefault(str(code), {"description": ERROR_STATUS[code], **ref})
            if "422" in responses:
                responses["422"] = {"description": responses["422"].get("description") or ERROR_STATUS[422], **ref}
                if responses["422"]["description"] == "Validation Error":
                    responses["422"]["description"] = ERROR_STATUS[422]
    for name in ("HTTPValidationError", "ValidationError"):
        if name in schemas and f"#/components/schemas/{name}" not in json.dumps(schema.get("paths", {})):
            del schemas[name]
    task = schemas.get("TaskCreate", {}).get("properties", {})
    if task:
        # the integer limits, exact (FastAPI's OpenAPI models turned them into floats) and on the integer branch
        limits = {"seed": {"minimum": 0, "exclusiveMaximum": SEED_LIMIT}}
        limits |= dict.fromkeys(("width", "height"), {"minimum": SIZE_MIN, "maximum": SIZE_MAX,
                                                     "multipleOf": SIZE_MULTIPLE})
        for name, lim in limits.items():
            for k in lim:
                task[name].pop(k, None)
            task[name]["anyOf"][0].update(lim)
        task["prompt"]["maxLength"] = settings.max_prompt_chars
        task["negative_prompt"]["anyOf"][0]["maxLength"] = settings.max_prompt_chars
        task["patches"]["enum"] = list(patch_choices)
        task["model"]["anyOf"][0]["enum"] = list(models)
    return schema


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

    app = FastAPI(title="eatsched host", version="0.1.0", lifespan=lifespan, dependencies=[Depends(strict_query)],
                  description="EAT serving system: submit text-to-image tasks, watch the cluster, fetch images.")
    app.state.host = host
    app.state.settings = settings
    app.state.stopping = asyncio.Event()  # set when the server begins to shut down (``run_host``)
    app.add_middleware(Guard, settings=settings)
    if settings.token and not settings.worker_token:
        log.warning("no --worker-token: workers use the client token, so every client could act as a worker")
    if not settings.token and settings.bind not in ("127.0.0.1", "localhost", "::1"):
        log.warning("no --token on %s: anyone who reaches the host may submit, cancel and read", settings.bind)
    openapi = app.openapi

    def openapi_document() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = document(openapi(), settings, host.patch_choices, settings.models)
        return app.openapi_schema

    app.openapi = openapi_document

    @app.exception_handler(ApiError)
    @app.exception_handler(Rejected)
    @app.exception_handler(ResultRejected)
    async def _api_error(request: Request, exc: ApiError | Rejected | ResultRejected):
        return JSONResponse({"detail": exc.detail, "error": exc.error}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        """Routing's own errors with the error schema: 404 no such route; 405 with every method of the path in
        ``Allow`` (the router names only the first route that matched the path)."""
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            methods = {m for r in app.router.routes if getattr(r, "methods", None)
                       and r.matches({**request.scope, "method": next(iter(r.methods))})[0] == Match.FULL
                       for m in r.methods}
            headers["Allow"] = ", ".join(sorted(methods))
        error = {404: "no_route", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"detail": str(exc.detail), "error": error}, status_code=exc.status_code, headers=headers)

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
    @app.post("/v1/tasks", status_code=202, response_model=TaskAccepted, tags=["tasks"], responses=errors(422, 429))
    async def submit_task(body: TaskCreate, request: Request):
        """Queue a task; it is stored durably before this answers."""
        client = request.client.host if request.client else "unknown"
        row = await host.submit_async(prompt=body.prompt, negative_prompt=body.negative_prompt, patches=body.patches,
                                      model=body.model, seed=body.seed, width=body.width, height=body.height,
                                      client=client)
        return {"id": row["id"], "state": QUEUED, "url": f"/v1/tasks/{row['id']}"}

    @app.get("/v1/tasks", response_model=TaskPage, tags=["tasks"], responses=errors(422))
    async def list_tasks(limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=OFFSET_MAX),
                         state: str | None = Query(None, description=f"one of {', '.join(STATES)}",
                                                   json_schema_extra={"enum": list(STATES)})):
        """Tasks, newest first."""
        if state is not None and state not in STATES:
            raise ApiError(422, "bad_state", f"state must be one of {', '.join(STATES)}")
        rows, total = host.store.list(state=state, limit=limit, offset=offset)
        return {"data": [host.task_public(r) for r in rows], "count": total, "offset": offset, "limit": limit}

    @app.get("/v1/tasks/{task_id}", response_model=TaskPublic, tags=["tasks"], responses=errors(404))
    async def get_task(task_id: str):
        """State, times, chosen steps and servers, estimated and measured quality of a task."""
        return host.task_public(task_or_404(task_id))

    @app.get("/v1/tasks/{task_id}/image", tags=["tasks"], response_class=FileResponse,
             responses={200: {"content": {"image/png": {}}}, **errors(404, 409, e409="the task has not finished")})
    async def get_image(task_id: str):
        """The generated image (PNG) of a finished task."""
        row = task_or_404(task_id)
        if row["state"] != FINISHED:
            raise ApiError(409, "not_finished", f"task {task_id} is {row['state']}; its image is not ready")
        if not row["image_path"] or not Path(row["image_path"]).is_file():
            raise ApiError(404, "no_image", f"task {task_id} finished without an image")
        return FileResponse(row["image_path"], media_type="image/png")

    @app.delete("/v1/tasks/{task_id}", tags=["tasks"],
                responses=errors(404, 409, e409="the task has started: only queued tasks can be cancelled"))
    async def cancel_task(task_id: str):
        """Cancel a task that has not started."""
        row = task_or_404(task_id)
        if not host.cancel(task_id):
            raise ApiError(409, "not_cancellable", f"task {task_id} is {row['state']}; only queued tasks can be "
                                                   "cancelled")
        return {"id": task_id, "state": "cancelled"}

    # --- cluster, metrics, page ---------------------------------------------------------------------------
    @app.get("/v1/cluster", tags=["cluster"])
    async def cluster(request: Request):
        """Servers (busy/idle, loaded model, group, health), groups, workers, predictor fits, policy. Workers'
        addresses and ports only to callers with a valid token (null otherwise)."""
        return host.cluster_public(addresses=request.scope.get("eat.addresses", False))

    @app.get("/metrics", response_class=PlainTextResponse, tags=["cluster"])
    async def metrics():
        """Prometheus text: queue length, tasks by state, response-time histogram, reloads, decisions."""
        return PlainTextResponse(host.metrics_text(), media_type="text/plain; version=0.0.4")

    @app.get("/healthz", tags=["cluster"])
    async def healthz():
        """Liveness: the process answers (it may still be warming up; see ``/readyz``)."""
        return {"ok": True, "epoch": host.epoch}

    @app.get("/readyz", tags=["cluster"], responses={503: {"description": "warming up: nothing is decided yet"}})
    async def readyz():
        """Readiness: 200 once the policy is loaded and warmed up (every compiled path of a decision ran once),
        503 before. Also the warm-up's wall seconds and the first decision's wall milliseconds after ready."""
        body = host.engine.readiness()
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @app.get("/v1/timeline", tags=["cluster"])
    async def timeline(minutes: float = Query(TIMELINE_MINUTES, gt=0, le=120)):
        """The schedule of the last ``minutes``: each task's arrival, start, cold start (``init``) and execution
        (``exec``) in wall seconds since ``origin_epoch``, and its servers (rows of ``servers``)."""
        return json_safe(host_timeline(host, minutes))

    @app.get("/v1/timeline.png", tags=["cluster"], response_class=Response,
             responses={200: {"content": {"image/png": {}}}})
    async def timeline_png(minutes: float = Query(TIMELINE_MINUTES, gt=0, le=120)):
        """``/v1/timeline`` drawn (``sim.timeline.draw_timeline``): one row per server, wall seconds across, each
        task a bar on each of its servers, hatched while its group cold-starts."""
        png = await asyncio.to_thread(host_timeline_png, host_timeline(host, minutes))
        return Response(png, media_type="image/png", headers={"cache-control": "no-store"})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(PAGE)

    # --- workers ------------------------------------------------------------------------------------------
    def worker_or_404(worker_id: str):
        w = host.workers.get(worker_id)
        if w is None or not w.up:
            raise ApiError(404, "unknown_worker", f"worker {worker_id!r} is not registered; register again")
        return w

    @app.post("/v1/workers/register", tags=["workers"],
              responses=errors(409, 422, e409="the cluster is full (--nodes)"))
    async def register(body: WorkerRegister):
        """A worker joins (or rejoins) the cluster."""
        try:
            w = host.register(worker_id=body.id, speed=body.speed, addr=body.addr, port=body.port,
                              backend=body.backend, running=body.running)
        except ValueError as e:
            raise ApiError(409, "cluster_full", str(e)) from None
        return {"index": w.index, "heartbeat_s": settings.heartbeat_s, "epoch": host.epoch}

    @app.post("/v1/workers/{worker_id}/heartbeat", tags=["workers"], responses=errors(404, 422))
    async def heartbeat(worker_id: str, body: Heartbeat):
        if not host.heartbeat(worker_id, body.running):
            raise ApiError(404, "unknown_worker", f"worker {worker_id!r} is not registered; register again")
        return {"ok": True}

    @app.get("/v1/workers/{worker_id}/job", tags=["workers"],
             responses={204: {"description": "no job within the wait"}, **errors(404, 422)})
    async def next_job(worker_id: str, wait: float = Query(min(10.0, settings.max_poll_s), ge=0,
                                                           le=settings.max_poll_s)):
        """Long poll for this worker's next patch job."""
        worker_or_404(worker_id)
        env = await _unless_stopping(app.state.stopping, host.next_job(worker_id, wait))
        if env is None:
            worker_or_404(worker_id)
            return Response(status_code=204)
        return env

    @app.post("/v1/workers/{worker_id}/result", tags=["workers"], response_model=ResultAccepted,
              responses=errors(403, 404, 409, 422, 503,
                               e403="wrong bearer token, or the job was not dispatched to this worker (or the "
                                    "ticket does not match)",
                               e409="a stale result (its attempt was given up: deadline, error, worker down, "
                                    "restart) or a duplicate", e422="invalid field, rank or image"))
    async def result(worker_id: str, body: WorkerResult):
        """A worker reports a finished (or failed) patch job with its measured times. Checked in full before
        anything changes (it must come from the worker the job went to, with the job's ticket; rank 0's image
        must be a readable PNG): a result that cannot be applied changes nothing, and the task runs on until its
        deadline."""
        payload = body.model_dump()
        try:
            host.executor.check_result(worker_id, payload)
            if payload["image_png"] and payload["rank"] == 0 and not payload["error"]:
                payload["image"] = await asyncio.to_thread(decode_png, payload["image_png"])
            accepted = host.on_result(worker_id, payload)  # checks again: the image check let others run
        except ResultRejected:
            host.metrics.result_rejected()
            raise
        if not accepted:
            host.metrics.result_rejected()
            raise ApiError(409, "stale_result", f"{payload['key']} was given up (deadline, error, worker down or "
                                                "host restart): this result does not count")
        return {"accepted": True}

    return app


async def _unless_stopping(stopping: asyncio.Event, poll):
    """The long poll's answer, or None (204) as soon as the server begins to shut down: a poll left waiting
    would be cancelled by the server, with a traceback, once its graceful-shutdown time ran out."""
    if stopping.is_set():
        poll.close()
        return None
    job = asyncio.ensure_future(poll)
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait((job, stop), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not job.done():
            job.cancel()  # the executor hands a job out only when its wait ends: nothing is lost
    return job.result() if job.done() and not job.cancelled() else None


def proxy_options(settings: HostSettings) -> dict:
    """uvicorn's proxy settings: X-Forwarded-For names the client (and so the rate limit's key) only when sent by
    a proxy named in ``forwarded_allow_ips``. (uvicorn's default trusts 127.0.0.1, so anyone on the host's machine
    could pick a fresh key per request.)"""
    if settings.forwarded_allow_ips:
        return {"proxy_headers": True, "forwarded_allow_ips": settings.forwarded_allow_ips}
    return {"proxy_headers": False}


def run_host(settings: HostSettings, *, log_level: str = "warning") -> None:
    """Serve until interrupted. On shutdown the workers' long polls are answered first (204), so the server
    stops at once and without tracebacks."""
    import uvicorn  # noqa: PLC0415

    app = create_app(settings)

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            app.state.stopping.set()
            await super().shutdown(sockets)

    server = Server(uvicorn.Config(app, host=settings.bind, port=settings.port, log_level=log_level,
                                   access_log=False, timeout_graceful_shutdown=2, **proxy_options(settings)))
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:
        raise SystemExit(3)  # uvicorn's startup failure
