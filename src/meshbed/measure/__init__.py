"""Pure functions from recorded samples to judged figures: no I/O, no clocks, unit-tested offline.

Suites gather samples (Envoy admin polls, request logs, counters, spans) and
hand them here; every number a verdict rests on is computed in this package.
A measured absence is a value: an Envoy that never converged counts as the
deadline, a missing ejection as 0 %.
"""
