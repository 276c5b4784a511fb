"""Models: estimator factories and training on matured labels with an out-of-time holdout."""
