"""`taskstack bench`: the reproducible load benchmark of both services.

command.py reads the arguments; runner.py runs the scenarios in order:
database.py and seed.py make and fill fresh databases (COPY), processes.py
runs the services (and the floor of floor.py, checked by fidelity.py) as pinned uvicorn processes
with environment.py's settings, workload.py turns the seeded data into
requests, wrk.py drives Debian's wrk with the Lua scripts of lua/, signins.py
adds the login storm's refresh tokens and probe, and report.py prints the
table and evaluates the targets.
"""
