"""Live fairness monitoring: window.py (streaming per-group counts), metrics.py (fairlearn-equal metrics, LL144
impact ratios, four-fifths with significance), stage.py (status, actions, admin endpoints), feedback.py (labels
that arrive later), alerts.py (log + webhook), report.py (reports over the audit trail), shared_pg.py (one window
for all replicas). Nothing heavy is imported here."""
