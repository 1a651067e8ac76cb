"""The study layer: the trial contract and the only door to Optuna's storage (DESIGN.md section 2).

Two sides:

- **records** (pure data, imported by everyone above): ``attrs`` (the names a study and its
  trials carry), ``settings`` (``StudySettings``, stored with the study), ``record``
  (``TrialRecord``, one typed reading of a stored trial; feasibility decided once) and ``read``
  (a study's facts and records: ``StudyInfo``, ``read_study``) and ``names`` (what a study name
  may be; the one folder a study's files go under);
- **storage** (the facade: the only code that touches Optuna's private names): ``storage``
  (opening the one ``RDBStorage`` of a process with heartbeats at construction, study look-ups),
  ``rdb`` (``ResilientStorage``: the retry policy and the error translator) and ``queue``
  (claiming a waiting trial, seeds and budget slots, proposals, handing an interrupted trial
  back).

``selection/``, ``export/`` and ``reports/`` take records; ``search/`` (the worker and ``start``)
drives the storage side. Importing this package touches no database.
"""
