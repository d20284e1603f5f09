"""What a trainer writes and the tuner reads without TensorFlow: where its model dir is, eval
event files, hypertune reports, SavedModel exports, checkpoint bundles, HParams summaries."""
