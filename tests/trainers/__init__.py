"""Small real TensorFlow trainers that follow real-world conventions, for integration tests.

Each module runs as `python -m tests.trainers.<name> --job-dir=DIR --learning_rate=...`;
see README.md in this directory.
"""
