"""MLOps platform for quantitative research."""

__version__ = "0.1.0"
