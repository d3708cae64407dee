"""The TAVR Kubeflow pipeline: wiring (tavr_pipeline.py), compile (compile.py), run (run.py)."""
