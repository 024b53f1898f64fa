"""`taskstack bench`: the reproducible load benchmark of both services.

seed.py fills fresh databases with COPY; processes.py runs the services (and
the raw floor of floor.py) as pinned uvicorn processes; workload.py turns the
seeded data into requests; wrk.py drives Debian's wrk with the Lua scripts of
lua/; runner.py runs the scenarios in order; report.py prints the table and
evaluates the targets.
"""
