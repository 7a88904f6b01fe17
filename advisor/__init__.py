"""Offline deployment advisor: calibration records -> replay -> guideline fit / Optuna search -> runtime config."""

__version__ = "0.1.0"
