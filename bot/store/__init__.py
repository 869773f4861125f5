"""The store: the only place that speaks SQL. The schema and its migrations (schema.py, pg.py), the ledger's
rows and counters (ledger.py) and the job state machine over them (jobstate.py)."""
