"""Models on the gateway: TFLite graphs built without TensorFlow, bundles, scoring, training."""

MIN_TRAINING_WINDOWS = 32  # fewer windows than this do not make a model worth alerting on
