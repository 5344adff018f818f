"""The fault suite: the whole shop under load while workers and Postgres are made to fail.

`python -m tests.chaos --minutes N` (or `make chaos`); see __main__.py. Small modules,
one idea each: postgres (a server it may restart), shop (the running services),
clients (customers placing orders), faults (what is broken, and when), invariants
(what must still hold, in SQL), report (the table), run (all of it in order).
"""
