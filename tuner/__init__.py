"""Hyperparameter tuning for TensorFlow Estimator trainers."""

__version__ = "0.1.0"
