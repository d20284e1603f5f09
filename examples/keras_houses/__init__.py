"""House prices with a Keras model turned into an Estimator (`model_to_estimator`)."""
