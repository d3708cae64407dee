"""Evaluation steps: one method on the bench pairs, the report, the gate and the export."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def bench(params: str, method: str, protocol: str, model: Input[Model], clips: Input[Dataset], results: Output[Dataset],
          metrics: Output[Metrics], keep_ratio: float = 0.0, reference_audio: bool = True):
    """`tavr bench` of one method (protocol video, raw, adapted or wrong_ref; keep_ratio 0 = the model's):
    videos, pairs.csv, summary.json."""
    from tavr import steps

    for name, value in steps.bench(params, method, protocol, model.path, clips.path, results.path, keep_ratio,
                                   reference_audio).items():  # fmt: skip
        metrics.log_metric(name, value)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def upper_bound(params: str, clips: Input[Dataset], results: Output[Dataset], metrics: Output[Metrics]):
    """The target clips scored as a method: the upper bound beside every method in the report."""
    from tavr import steps

    for name, value in steps.upper_bound(params, clips.path, results.path).items():
        metrics.log_metric(name, value)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def report(params: str, tavr: Input[Dataset], image_raw: Input[Dataset], image_adapted: Input[Dataset],
           tavr_stage1: Input[Dataset], tavr_stage2: Input[Dataset], tavr_keep025: Input[Dataset],
           tavr_no_ref_audio: Input[Dataset], tavr_wrong_ref: Input[Dataset], upper_bound: Input[Dataset],
           clips: Input[Dataset], folder: Output[Dataset], page: Output[HTML], metrics: Output[Metrics]):  # fmt: skip
    """The report folder (index.html, summary.json, claims.md, plots, videos) and the page with its plots inlined, for the UI."""
    from tavr import steps

    results = {"tavr": tavr.path, "image_raw": image_raw.path, "image_adapted": image_adapted.path,
               "tavr_stage1": tavr_stage1.path, "tavr_stage2": tavr_stage2.path, "tavr_keep025": tavr_keep025.path,
               "tavr_no_ref_audio": tavr_no_ref_audio.path, "tavr_wrong_ref": tavr_wrong_ref.path,
               "upper_bound": upper_bound.path}  # fmt: skip
    for name, value in steps.report(params, results, clips.path, folder.path).items():
        metrics.log_metric(name, value)
    steps.inline_page(folder.path, page.path)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def gate(params: str, production: str, report: Input[Dataset], decision: Output[Artifact],
         metrics: Output[Metrics]) -> NamedTuple("Outputs", [("passed", bool)]):  # fmt: skip
    """The deployment decision (gate.json); `production` is a registered model folder ("" = none)."""
    from collections import namedtuple

    from tavr import steps

    result = steps.gate(params, f"{report.path}/summary.json", decision.path, production)
    metrics.log_metric("pass", float(result["pass"]))
    for check in result["checks"]:
        metrics.log_metric(check["check"], float(check["ok"]))
    return namedtuple("Outputs", ["passed"])(bool(result["pass"]))


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def export(decision: Input[Artifact], model: Input[Model], exported: Output[Model]):
    """The candidate's pipeline folder when the gate passed; export.json either way."""
    from tavr import steps

    steps.export(decision.path, model.path, exported.path)
