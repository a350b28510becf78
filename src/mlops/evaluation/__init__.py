"""Evaluation harness: benchmark suites, runs, model comparison and SHAP explanations."""
