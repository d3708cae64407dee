"""Evaluation: held-out identity, the cross-scene benchmark and its metrics, the report, the claims and the gate."""
