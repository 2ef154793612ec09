"""Where searches run and what they record: config, launcher, trainable, MLflow, report, CLI."""
