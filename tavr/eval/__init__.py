"""Evaluation: held-out identity now; the benchmark, report and gate follow."""
