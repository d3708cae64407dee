"""TAVR: talking-avatar video generation from a video reference.

The library has no side effects on import: nothing here reads the environment,
parses arguments or touches devices. Entry points live in `tavr.cli` and in the
`python -m tavr...` modules that DVC stages and Kubeflow components call.
"""

__version__ = "0.1.0"
