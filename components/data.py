"""Data steps: ingest (TAVR-Synth, folders, or paths pulled with DVC) and the QA gate."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ingest(params: str, sources: str, repo: str, remote: str, clips: Output[Dataset], metrics: Output[Metrics]):
    """Clips, manifest and bench pairs from `sources` ("synth", folders, "dvc:<path>" pulled from `remote`)."""
    from tavr import steps

    for name, value in steps.ingest(params, clips.path, sources, repo, remote).items():
        metrics.log_metric(name, value)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def qa(params: str, clips: Input[Dataset], report: Output[HTML], metrics: Output[Metrics]):
    """great-expectations over the manifest; fails the run when an expectation fails."""
    import shutil
    import tempfile
    from pathlib import Path

    from tavr import steps

    with tempfile.TemporaryDirectory() as tmp:
        numbers = steps.qa(params, clips.path, tmp)
        shutil.copy(Path(tmp) / "data_docs" / "index.html", report.path)
    for name, value in numbers.items():
        metrics.log_metric(name, value)
