"""Tests that drive real third-party instrumentation; each file runs in its own venv."""
