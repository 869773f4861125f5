"""The store: the only place that speaks SQL. The schema and its migrations (schema.py, pg.py), the ledger's
rows and counters (ledger.py) and the job state machine over them (jobstate.py).
Repositories of the other modules' tables: results.py (finished jobs, their input images, price checks) and
batches.py (relax mode's batches, their lines and the relax jobs waiting for them)."""
