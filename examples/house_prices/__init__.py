"""House prices with a custom Estimator (`model_fn`)."""
