"""Reports: see a search the way the paper argues, in plots (issue 7).

Each figure is built in two steps: a pure *data step* (trial records -> a small frozen dataclass
of arrays and rows; ``front``, ``complexity``, ``scaling``, ``curves``), tested without plotly,
then a *figure step* (``figures``: dataclass -> plotly ``Figure``). ``report`` puts every figure
into one self-contained HTML file, ``png`` writes them as images through kaleido, ``status`` is
the data behind ``rs-search status`` and ``dashboard`` serves optuna-dashboard.

Everything here takes trial records (``rs_search.study``), never a stored trial, and never
trains (DESIGN.md section 2).
"""
