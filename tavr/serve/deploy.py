"""Deploy an exported model as a KServe InferenceService: create, or roll out as a canary, and
roll back when the new revision does not become ready.

    canary_rollout(api, body, namespace, canary_percent, timeout_s) -> {"action", "revision", "ready", ...}

`api` is a kubernetes `CustomObjectsApi` (or anything with its get/create/patch methods).
- No service yet: it is created and must become Ready.
- A service exists: its predictor is replaced by the new one with `canaryTrafficPercent`, so
  KServe sends that share of traffic to the new revision and the rest to the last good one.
  The new revision must appear and become ready within `timeout_s`; otherwise the canary
  share is set to 0 (KServe's rollback: all traffic to the previous revision) and
  `RolloutFailed` is raised, so the pipeline step fails visibly.
Promoting a healthy canary to 100% is a separate, deliberate patch (manifests/README.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tavr.config import KubeflowConfig

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
FAILED_REASONS = {"RevisionFailed", "RevisionMissing", "ContainerMissing", "ExitCode"}


class RolloutFailed(RuntimeError):
    pass


def inference_service(cfg: KubeflowConfig, storage_uri: str, gpu: bool = False) -> dict:
    """The InferenceService for the model at `storage_uri`: the predictor of
    manifests/base/inferenceservice.yaml (a test keeps the two equal) with this image and model.
    A custom container takes its model location from the STORAGE_URI variable; KServe mounts
    it at /mnt/models. A new URI per model makes every rollout a new revision."""
    limits = {"cpu": "2", "memory": "8Gi", **({"nvidia.com/gpu": "1"} if gpu else {})}
    container = {
        "name": "kserve-container", "image": cfg.gpu_image if gpu else cfg.image, "command": ["tavr"],
        "args": ["serve", "--model-dir", "/mnt/models", "--host", "0.0.0.0", "--port", "8080"],
        "env": [{"name": "STORAGE_URI", "value": storage_uri}],
        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
        # ready only after the model load and a warm-up generation: up to 10 minutes on a CPU
        "readinessProbe": {"httpGet": {"path": "/v2/models/tavr/ready", "port": 8080}, "initialDelaySeconds": 10,
                           "periodSeconds": 10, "failureThreshold": 60},
        "resources": {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": limits},
    }  # fmt: skip
    predictor = {"minReplicas": 1, "maxReplicas": 2, "containerConcurrency": 3, "timeout": 600, "containers": [container]}
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceService",
        "metadata": {"name": cfg.service, "namespace": cfg.namespace},
        "spec": {"predictor": predictor},
    }  # fmt: skip


def _get(api, namespace: str, name: str) -> dict | None:
    try:
        return api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except Exception as e:  # kubernetes.client.ApiException; 404 means "not there yet"
        if getattr(e, "status", None) == 404:
            return None
        raise


def _predictor_status(obj: dict) -> dict:
    return (obj.get("status") or {}).get("components", {}).get("predictor", {}) or {}


def _failure(obj: dict) -> str | None:
    for c in (obj.get("status") or {}).get("conditions", []) or []:
        if c.get("status") == "False" and c.get("reason") in FAILED_REASONS:
            return f"{c.get('type')}: {c.get('reason')} {c.get('message', '')}".strip()
    return None


def _ready(obj: dict, old_revision: str | None) -> bool:
    conditions = {c.get("type"): c.get("status") for c in (obj.get("status") or {}).get("conditions", []) or []}
    pred = _predictor_status(obj)
    created = pred.get("latestCreatedRevision")
    new = created is not None and created != old_revision
    return new and pred.get("latestReadyRevision") == created and conditions.get("Ready") == "True"


def canary_rollout(api, body: dict, namespace: str, canary_percent: int, timeout_s: float, poll_s: float = 5.0,
            sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> dict:  # fmt: skip
    """Create or canary-patch the service in `body`, wait for the new revision, roll back on failure."""
    if not 0 <= canary_percent <= 100:
        raise ValueError(f"canary_percent must be within 0-100; got {canary_percent}")
    name = body["metadata"]["name"]
    current = _get(api, namespace, name)
    if current is None:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        action, old_revision = "created", None
    else:
        old_revision = _predictor_status(current).get("latestCreatedRevision")
        predictor = {**body["spec"]["predictor"], "canaryTrafficPercent": canary_percent}
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"spec": {"predictor": predictor}})
        action = "canary"
    deadline, reason = clock() + timeout_s, "timed out"
    while clock() < deadline:
        obj = _get(api, namespace, name) or {}
        if _ready(obj, old_revision):
            revision = _predictor_status(obj)["latestCreatedRevision"]
            return {"action": action, "revision": revision, "ready": True, "canary_percent": canary_percent if action == "canary" else 100}
        reason = _failure(obj) or reason
        if reason != "timed out":
            break
        sleep(poll_s)
    if action == "canary":  # all traffic back to the last revision that was ready
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"spec": {"predictor": {"canaryTrafficPercent": 0}}})
        raise RolloutFailed(f"{namespace}/{name}: the new revision did not become ready ({reason}); rolled back to {old_revision}")
    raise RolloutFailed(f"{namespace}/{name}: the new service did not become ready ({reason})")
