"""Example TensorFlow Estimator trainers for the tuner (AI Platform trainer conventions)."""
