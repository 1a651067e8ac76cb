"""The parts of ``benchmarks/device_check.py``: one prepared run that captures what a GPU session
must show (issue 14 item 1), and the same code at tiny sizes on the CPU (``--dry-run``).

- :mod:`~devcheck.runner`: parts in fresh processes with their own time budgets; results and
  failures recorded as they happen.
- :mod:`~devcheck.sizes`: every size, count and time budget of both modes, in one place.
- :mod:`~devcheck.machine`, :mod:`~devcheck.train_rate`, :mod:`~devcheck.datapath`
  (+ :mod:`~devcheck.gpu_augment`), :mod:`~devcheck.latency`, :mod:`~devcheck.engine_checks`,
  :mod:`~devcheck.search_e2e`: the parts.
- :mod:`~devcheck.report`: the markdown summary (no torch import).

The package lives beside the script (``benchmarks/`` is not a package): the script puts its own
folder first on ``sys.path``, as running ``python benchmarks/device_check.py`` does anyway.
"""
