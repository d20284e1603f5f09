"""The tuner's own vocabulary: the spec, frozen entities, errors, settings, the trainer
registry. Imports nothing else of the tuner."""
