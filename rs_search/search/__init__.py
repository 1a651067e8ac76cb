"""The search service: studies, workers, Pareto-aware successive halving, fault tolerance.

- ``settings``: what a study searches, stored in its user attributes (workers need only the name
  and the storage URL);
- ``study``: create/resume a study, the trial budget as a queue of waiting trials, samplers;
- ``storage``: one RDBStorage per process with heartbeats and retry-with-backoff;
- ``objective``: one trial (sample, latency, hard limits, training with halving);
- ``halving``: the promotion rule at each rung (pure);
- ``worker`` / ``ddp``: the worker loop, and the torchrun group that trains one trial;
- ``artifacts``: per-trial checkpoint directories, optionally mirrored to an artifact store;
- ``launch`` / ``summary``: ``rs-search start`` (validation, local workers, progress, front).

Importing this package touches no database, GPU or network.
"""
