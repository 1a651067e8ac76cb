"""The search service: studies, workers, Pareto-aware successive halving, fault tolerance.

- ``study``: create, resume and join a study (the queue, the storage and the trial contract are
  the study layer's, ``rs_search.study``); ``settings``: a new study's settings from its space;
- ``objective``: one trial (sample, latency, hard limits, training with halving);
- ``halving``: the promotion rule at each rung (pure, on trial records);
- ``worker`` / ``ddp``: the worker loop, and the torchrun group that trains one trial;
- ``proposals``: the scaling rules (``rs_search.selection``) against a live study, and the
  worker's auto-scale hook;
- ``artifacts``: per-trial checkpoint directories, optionally mirrored to an artifact store;
- ``launch`` / ``local`` / ``summary``: ``rs-search start`` (validation, one ``run_search`` call
  with progress callbacks, local worker processes, the front for people);
- ``deps``: the adapters to the latency cache and the training engine.

Importing this package touches no database, GPU or network.
"""
