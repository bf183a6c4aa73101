"""The lifecycle engine: a pure state machine over a job's spec, status and observations, and
the small policy objects (triggers with storm control, the promotion gate, retry and backoff)
that take its decisions. It does no I/O; the local runner and the operator apply its actions."""
