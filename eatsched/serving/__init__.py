"""The serving system: the host (HTTP API, durable queue, scheduling loop) and the worker process.

Host, split the way vLLM splits engine, scheduler and worker:

* ``engine.py``: ``Engine``, the submission gate (``admit``: every check of a submission, for the HTTP API,
  ``eat demo`` and ``eat bench serve`` alike), the queue and the scheduling loop (decide, dispatch, update);
* ``core.scheduler.ClusterScheduler`` (below this package): the decisions, and the only copy of server state
  (up, busy, held, grouped, speed);
* ``executor.py``: ``Executor``, the workers (registration, heartbeats), job delivery and results;
* ``metrics.py`` (counters, Prometheus text), ``views.py`` (JSON of tasks, workers, the cluster);
* ``host.py``: ``Host``, the three behind one object for ``api.py`` (FastAPI routes and schemas);
* ``store.py`` (SQLite tasks, images on disk), ``settings.py`` (``HostSettings``), ``webpage.py``.

Around it: ``worker.py`` (the worker process's HTTP loop; its backends live in ``eatsched.gen.backends``),
``client.py`` (a thin HTTP client), ``launch.py`` (a local host and simulated workers as subprocesses) and
``demo.py`` (``eat demo``). The serving benchmark is ``eatsched.bench.serve``.
"""
