"""Studies built on the schedulers: ``evaluate`` (the paper's grid, resumable, with tables and plots), ``report``
(Markdown / HTML of an evaluation), ``optimal`` (the exact offline optimum of small instances), ``paper_tables``
(the paper's published numbers, for comparison). Training lives in ``algos`` (``registry.train``); benchmarks in
``bench``."""
