"""Selection: pure functions on trial records (Pareto sorting, the paper's scaling rules).

Nothing here trains or touches a database: callers pass records, views or arrays in and get
proposals with their reasons back; ``rs_search.search.proposals`` enqueues them.
"""
