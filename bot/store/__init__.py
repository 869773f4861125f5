"""The store: the only place that speaks SQL (.ci/run checks it). The schema and its migrations (schema.py,
pg.py), the ledger's rows and counters (ledger.py) and the job state machine over them (jobstate.py); the
repositories of the other tables, which take and return plain data: tenant and channel settings (settings.py),
limit overrides and counters (counters.py), the ledger read back for reports (usage.py), dedupe keys
(dedupe.py), finished jobs with their input images and price checks (results.py), relax mode's batches, their
lines and the jobs waiting for them (batches.py); what a reservation checks, as numbers (admission.py); a
health check's connection (probe.py)."""
