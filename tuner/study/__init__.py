"""Studies and Optuna: submitting and resuming, sampling, proposals, importances, the attrs and
summaries viewers read, and the answers the API and the local CLI give."""
