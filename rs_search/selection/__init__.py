"""Selection: pure functions that read finished trials (Pareto sorting, the paper's scaling rules).

Nothing here trains or touches a database; callers pass arrays or trials in.
"""
