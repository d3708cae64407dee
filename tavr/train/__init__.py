"""Training: shared helpers (`common.py`) and one flat module per stage."""
