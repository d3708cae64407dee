"""QA gate: great-expectations checks over the ingest manifest.

`run_qa` validates the manifest (a DataFrame or a parquet path) against the
`QAConfig` thresholds in an ephemeral GX context, builds data docs under
`report_dir/data_docs` and writes `report_dir/qa.json`. The CLI exits non-zero
when `not report.success` and prints `format_failures(report)`.

GX has no cross-row expectation for pandas, so the split-leak checks run on
derived boolean columns (`identity_in_both_splits`, `scene_in_both_splits`)
that must be all False; their failure messages name the leaking values.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tavr.config import QAConfig
from tavr.files import write_json

SUITE = "tavr_manifest"
SITE = "tavr_qa"
SPLITS = ("train", "bench")
REQUIRED = (
    "clip_id", "identity", "scene", "split", "fps", "duration_s", "width", "height",
    "has_audio", "audio_rate", "face_rate", "face_size_mean",
)
LEAKS = {"identity_in_both_splits": "identity", "scene_in_both_splits": "scene"}
N_EXAMPLES = 5


@dataclass
class QAReport:
    success: bool
    failed: list[str] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)
    n_clips: int = 0


def _leaks(df: pd.DataFrame, col: str) -> list[str]:
    """Values of `col` that occur in both the train and the bench split."""
    train = set(df.loc[df["split"] == "train", col].dropna())
    bench = set(df.loc[df["split"] == "bench", col].dropna())
    return sorted(map(str, train & bench))


def _checks(cfg: QAConfig, columns: set[str]) -> list[tuple[str, Any]]:
    """(label, expectation) pairs; column checks only for columns that exist."""
    import great_expectations as gx

    E = gx.expectations
    lo, hi = cfg.fps - cfg.fps_tolerance, cfg.fps + cfg.fps_tolerance
    column_checks = [
        ("fps", f"{lo:g}..{hi:g}", E.ExpectColumnValuesToBeBetween(column="fps", min_value=lo, max_value=hi)),
        ("duration_s", f"{cfg.min_seconds:g}..{cfg.max_seconds:g}",
         E.ExpectColumnValuesToBeBetween(column="duration_s", min_value=cfg.min_seconds, max_value=cfg.max_seconds)),
        ("width", f"== {cfg.size}", E.ExpectColumnValuesToBeInSet(column="width", value_set=[cfg.size])),
        ("height", f"== {cfg.size}", E.ExpectColumnValuesToBeInSet(column="height", value_set=[cfg.size])),
        ("has_audio", "all True", E.ExpectColumnValuesToBeInSet(column="has_audio", value_set=[True])),
        ("audio_rate", f"== {cfg.audio_rate}",
         E.ExpectColumnValuesToBeInSet(column="audio_rate", value_set=[cfg.audio_rate])),
        ("face_rate", f">= {cfg.min_face_rate:g}",
         E.ExpectColumnValuesToBeBetween(column="face_rate", min_value=cfg.min_face_rate)),
        ("face_size_mean", f"{cfg.min_face_size:g}..{cfg.max_face_size:g}",
         E.ExpectColumnValuesToBeBetween(column="face_size_mean", min_value=cfg.min_face_size,
                                         max_value=cfg.max_face_size)),
        ("clip_id", "unique", E.ExpectColumnValuesToBeUnique(column="clip_id")),
        ("split", "in " + "/".join(SPLITS), E.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS))),
    ]
    # Range/set checks skip nulls, so every required column also gets a not-null check.
    column_checks += [(c, "not null", E.ExpectColumnValuesToNotBeNull(column=c)) for c in REQUIRED]
    column_checks += [(c, "all False", E.ExpectColumnValuesToBeInSet(column=c, value_set=[False])) for c in LEAKS]
    checks = [
        ("expect_table_columns_to_match_set(required columns)",
         E.ExpectTableColumnsToMatchSet(column_set=list(REQUIRED), exact_match=False)),
        (f"expect_table_row_count_to_be_between(>= {cfg.min_clips})",
         E.ExpectTableRowCountToBeBetween(min_value=cfg.min_clips)),
    ]
    for col, desc, exp in column_checks:
        if col in columns:
            checks.append((f"{exp.expectation_type}({col}, {desc})", exp))
    return checks


def _context(docs_dir: Path) -> Any:
    """Ephemeral context: in-memory stores, one filesystem docs site, no progress bars or analytics."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig, InMemoryStoreBackendDefaults, ProgressBarsConfig,
    )

    site = {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites={SITE: site},
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _summarise(label: str, r: Any, leaked: dict[str, list[str]]) -> tuple[dict, str | None]:
    """One qa.json entry and, for a failure, its one-line message."""
    cfg, res = r.expectation_config, r.result or {}
    kwargs = {k: v for k, v in cfg.kwargs.items() if k != "batch_id"}
    column = kwargs.get("column")
    examples = [
        row.get("clip_id", row) if isinstance(row, dict) else row
        for row in res.get("partial_unexpected_index_list") or res.get("partial_unexpected_list") or []
    ][:N_EXAMPLES]
    entry = {
        "expectation": cfg.type, "column": column, "kwargs": kwargs, "success": bool(r.success),
        "unexpected_count": res.get("unexpected_count"), "unexpected_examples": examples,
    }
    if column in leaked:
        entry["leaked"] = leaked[column]
    if r.success:
        return entry, None
    if r.exception_info and r.exception_info.get("raised_exception"):
        detail = f"error: {r.exception_info.get('exception_message')}"
    elif "details" in res and "mismatched" in res["details"]:
        detail = f"missing required columns {res['details']['mismatched'].get('missing', [])}"
    elif "unexpected_count" in res:
        detail = f"{res['unexpected_count']} of {res.get('element_count')} rows fail, e.g. {examples}"
    else:
        detail = f"observed {res.get('observed_value')!r}"
    if column in leaked:
        detail = f"{LEAKS[column]} values in both train and bench: {leaked[column]}; {detail}"
    return entry, f"{label}: {detail}"


def run_qa(manifest: pd.DataFrame | str | Path, cfg: QAConfig, report_dir: str | Path) -> QAReport:
    """Validate the manifest; write data docs and qa.json into `report_dir`."""
    import great_expectations as gx

    df = manifest.copy() if isinstance(manifest, pd.DataFrame) else pd.read_parquet(manifest)
    report_dir = Path(report_dir).resolve()
    docs_dir = report_dir / "data_docs"
    report_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(docs_dir, ignore_errors=True)  # the site lists what it finds: keep only this run

    leaked: dict[str, list[str]] = {}
    for derived, col in LEAKS.items():
        if {col, "split"} <= set(df.columns):
            leaked[derived] = _leaks(df, col)
            df[derived] = df[col].astype(str).isin(leaked[derived]) & df[col].notna()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        context = _context(docs_dir)
        batch_def = (
            context.data_sources.add_pandas("tavr")
            .add_dataframe_asset("manifest")
            .add_batch_definition_whole_dataframe("all")
        )
        checks = _checks(cfg, set(df.columns))
        suite = context.suites.add(gx.ExpectationSuite(name=SUITE))
        for _, exp in checks:
            suite.add_expectation(exp)
        labels = {exp.id: label for label, exp in checks}
        order = {exp.id: i for i, (_, exp) in enumerate(checks)}
        validation = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{SUITE}_validation", data=batch_def, suite=suite)
        )
        result_format: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": N_EXAMPLES}
        if "clip_id" in df.columns:
            result_format["unexpected_index_column_names"] = ["clip_id"]
        checkpoint = context.checkpoints.add(gx.Checkpoint(
            name=f"{SUITE}_checkpoint",
            validation_definitions=[validation],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs", site_names=[SITE])],
            result_format=result_format,
        ))
        outcome = checkpoint.run(batch_parameters={"dataframe": df})
        if not (docs_dir / "index.html").exists():
            context.build_data_docs(site_names=[SITE])

    rows = sorted(
        (r for vr in outcome.run_results.values() for r in vr.results),
        key=lambda r: order.get(r.expectation_config.id, len(order)),
    )
    entries, failed = [], []
    for r in rows:
        entry, message = _summarise(labels.get(r.expectation_config.id, r.expectation_config.type), r, leaked)
        entries.append(entry)
        if message:
            failed.append(message)
    report = QAReport(success=bool(outcome.success) and not failed, failed=failed, results=entries,
                      n_clips=len(df))
    write_json(report_dir / "qa.json", {
        "success": report.success, "n_clips": report.n_clips, "failed": failed,
        "expectations": entries, "data_docs": "data_docs/index.html",
    })
    return report


def format_failures(report: QAReport) -> str:
    """One line per failed expectation (empty when the manifest passed)."""
    return "\n".join(f"QA FAIL {line}" for line in report.failed)
