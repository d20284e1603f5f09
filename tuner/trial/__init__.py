"""Trial processes: launching and stopping them, their GPUs and CPUs, warm starts from a
parent that imported TensorFlow once, and the watchdog that stops them if their manager stalls."""
