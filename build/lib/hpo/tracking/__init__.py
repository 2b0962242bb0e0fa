"""Tracking: every search and every trial recorded in MLflow."""

from hpo.tracking._mlflow import RUN_STATUS, MlflowTracker, TrialRun, default_tracking_uri

__all__ = ["RUN_STATUS", "MlflowTracker", "TrialRun", "default_tracking_uri"]
