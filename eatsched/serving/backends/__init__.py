"""Worker backends (the ``serve`` branch adds the registry ``make_backend`` and ``simulated``)."""
