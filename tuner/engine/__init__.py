"""The study manager and its parts: which studies to claim, launching, supervising one trial
(ingest, observe, keep, finish), lease fencing, takeover of stale runs, the link to Optuna."""
