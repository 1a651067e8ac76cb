"""Tabular benchmark of real learning curves (issue 11; HPOBench, YAHPO Gym, NAS-Bench-201 and
HW-NAS-Bench work the same way): train a fixed set of candidates once, record their curves,
latency and size, then replay search methods against the table in seconds.

- ``grid``: which candidates a table holds (pure: all of a small space, else a seeded sample;
  equivalent candidates normalised to one);
- ``table``: the file format (JSON lines, versioned), its writer and its validating loader;
- ``build``: the thin orchestration that trains and measures the candidates, resumably;
- ``metrics``: the table's true front, hypervolume fractions, rank agreement between rungs and
  the full budget, and the share of the true front a halving rule prunes (pure).

Importing ``grid``, ``table`` and ``metrics`` loads no torch; ``build`` does.
"""
