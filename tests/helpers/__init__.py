"""Helpers shared by the tests (and, where they need no pytest, by the benchmarks).

One module per job, so a test imports what it uses and nothing else:

- ``plugins``: write a plugin folder (manifest and entry file). Benchmarks use it too.
- ``workers``: start a real sandboxed worker with a plugin loaded.
- ``waiting``: wait for a condition, for hooks running in a worker, or for a plugin's log
  line; never for a guessed amount of time. Benchmarks use it too.
- ``events``: record a manager's events and wait on them.
- ``processes``: the process table as the host sees it (liveness, descendants).
- ``net``: free ports and throwaway local TCP servers.
- ``httpserver``: a small recording HTTP server for fetch tests.
- ``cli``: the installed console script, run as a subprocess.
"""
