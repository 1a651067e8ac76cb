"""The parts of ``benchmarks/orchestration.py`` (issue 11 item 6: what the orchestration costs).

- :mod:`~orchcost.common`: the run's settings, the benchmark space, the answered training and the
  meters a worker process installs (SQL statements, sampler time);
- :mod:`~orchcost.worker`: one worker process, rs-search's or plain Optuna's;
- :mod:`~orchcost.study`: a fresh database and the study in it, made as each engine's user makes it;
- :mod:`~orchcost.probes`: CPU accounting (the machine, the PostgreSQL server) and the per-call
  breakdown of one worker's storage calls;
- :mod:`~orchcost.figures`: percentiles, the per-run summary, saturation, the comparison, the
  printed tables.

The package lives beside the script (``benchmarks/`` is not a package): running
``python benchmarks/orchestration.py`` puts the script's folder first on ``sys.path``.
"""
