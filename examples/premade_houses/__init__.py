"""House prices with a premade (canned) Estimator: `DNNLinearCombinedRegressor`."""
