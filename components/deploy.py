"""The deploy step: roll the exported model out on KServe (tavr.serve.deploy), or, with `dry_run`,
only write the InferenceService it would apply (local runs have no cluster)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deploy(params: str, storage_uri: str, dry_run: bool, exported: Input[Model], service: Output[Artifact]) -> str:
    """Create or canary-patch the InferenceService for the exported model; returns the action taken."""
    import json

    from tavr import steps
    from tavr.serve import deploy as kserve_deploy

    cfg = steps.config(params).kubeflow
    body = kserve_deploy.inference_service(cfg, storage_uri or steps.storage_uri(exported.uri), gpu=cfg.serve_gpu)
    with open(service.path, "w") as f:
        json.dump(body, f, indent=1)
    if dry_run:
        return "dry-run"
    from kubernetes import client, config

    config.load_incluster_config()
    result = kserve_deploy.canary_rollout(client.CustomObjectsApi(), body, cfg.namespace, cfg.canary_percent, cfg.deploy_timeout_s)
    return result["action"]
