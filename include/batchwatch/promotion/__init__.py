"""Retrain -> validate -> promote: a candidate, the gates it must pass, the atomic swap, and rollback."""
