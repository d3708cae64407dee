"""Run the pipeline on this machine (every step a subprocess of this Python, through
kfp.local) or submit it to a Kubeflow Pipelines cluster.

    python -m pipelines.run --local [--root local_outputs] [--params params.yaml] [--docker]
    python -m pipelines.run --host https://KFP_HOST [--namespace NS] [--experiment tavr] [--wait]
        [--sources synth|dvc:data/raw|/mnt/videos] [--production PATH] [--deploy]

`--docker` runs every local step in its component's image instead (kfp.local.DockerRunner, with
no network, as the user the image names), the check that the image holds what the steps need
(`make test-images`). A local run deploys nothing (there is no cluster): its deploy step, when the gate passes,
only writes the InferenceService it would apply. It prints where the gate decision, the export
and the report are.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path


def _local(args, params: str) -> int:
    from kfp import local

    from pipelines.tavr_pipeline import tavr_pipeline

    warnings.filterwarnings("ignore", message=".*non-Python base image.*")  # the package image has Python
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")  # display names, GPUs
    root = Path(args.root).resolve()
    if args.docker:  # the steps write into the root as the image's non-root user
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o777)
        runner = local.DockerRunner(network_mode="none")
    else:
        runner = local.SubprocessRunner(use_venv=False)
    local.init(runner=runner, pipeline_root=str(root), enable_caching=args.cache)
    run = tavr_pipeline(params=params, sources=args.sources, repo=os.getcwd(), remote=args.remote,
                        production=args.production, deploy_dry_run=True)  # fmt: skip
    for name in ("decision", "exported", "report"):
        print(f"{name}: {run.outputs[name].path}")
    return 0


def _cluster(args, params: str) -> int:
    import kfp

    from pipelines.tavr_pipeline import tavr_pipeline

    client = kfp.Client(host=args.host, namespace=args.namespace or None)
    arguments = {"params": params, "sources": args.sources, "remote": args.remote, "production": args.production,
                 "deploy_dry_run": not args.deploy}  # fmt: skip
    run = client.create_run_from_pipeline_func(tavr_pipeline, arguments=arguments, experiment_name=args.experiment,
                                               enable_caching=args.cache)  # fmt: skip
    print(f"submitted run {run.run_id} to {args.host}")
    if args.wait:
        done = client.wait_for_run_completion(run.run_id, timeout=args.timeout)
        print(f"run {run.run_id}: {done.state}")
        return 0 if done.state == "SUCCEEDED" else 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run the TAVR pipeline locally (kfp.local) or on a Kubeflow cluster.")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--local", action="store_true", help="every step as a subprocess here")
    where.add_argument("--host", help="Kubeflow Pipelines endpoint to submit to")
    ap.add_argument("--docker", action="store_true", help="local runs: every step in its component's image")
    ap.add_argument("--params", default="params.yaml", help="params file whose text every step reads")
    ap.add_argument("--sources", default=None, help="ingest sources (default: kubeflow.sources)")
    ap.add_argument("--remote", default="", help="DVC remote for dvc:<path> sources")
    ap.add_argument("--production", default="", help="registered production model folder the gate compares with")
    ap.add_argument("--root", default="local_outputs", help="local runs: where artifacts go")
    ap.add_argument("--no-cache", dest="cache", action="store_false", help="re-run steps whose inputs did not change")
    ap.add_argument("--namespace", default="", help="cluster runs: Kubeflow profile namespace")
    ap.add_argument("--experiment", default="tavr")
    ap.add_argument("--deploy", action="store_true", help="cluster runs: apply the InferenceService when the gate passes")
    ap.add_argument("--wait", action="store_true", help="cluster runs: wait for the run to finish")
    ap.add_argument("--timeout", type=int, default=6 * 3600)
    args = ap.parse_args(argv)
    if not Path(args.params).is_file():
        ap.error(f"params file {args.params} does not exist")
    os.environ["TAVR_PARAMS"] = str(Path(args.params).resolve())  # components read their images from it
    from tavr.config import load_config

    params = Path(args.params).read_text()
    args.sources = args.sources or load_config(args.params).kubeflow.sources
    return _local(args, params) if args.local else _cluster(args, params)


if __name__ == "__main__":
    sys.exit(main())
