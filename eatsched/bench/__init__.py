"""``eat bench``: one module per subcommand, each printing numbers and ratios (JSON with ``--json``). Speed and
memory live here, never in test assertions."""
