"""Helpers shared by the tests (and, where they need no pytest, by the benchmarks).

One module per job, so a test imports what it uses and nothing else:

- ``plugins``: write a plugin folder (manifest and entry file).
- ``workers``: start a real sandboxed worker with a plugin loaded, and see what runs in it.
- ``waiting``: wait for a condition or a manager event, never for a guessed amount of time.
- ``processes``: the process table as the host sees it (children, liveness).
- ``net``: free ports and throwaway local servers.
- ``httpserver``: a small recording HTTP server for fetch tests.
"""
