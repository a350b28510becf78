"""Model lifecycle: training with time-ordered splits, MLflow tracking and registration."""
