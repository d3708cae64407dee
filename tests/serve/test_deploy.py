"""KServe rollout logic against a scripted API server: create, canary, ready, and rollback."""

import pytest

from tavr.config import KubeflowConfig
from tavr.serve.deploy import RolloutFailed, canary_rollout, inference_service


class NotFound(Exception):
    status = 404


class FakeKServe:
    """A CustomObjectsApi stand-in: one InferenceService whose status moves on as `script` says on each read."""

    def __init__(self, existing=None, script=()):
        self.obj, self.script, self.calls = existing, list(script), []

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        if self.obj is None:
            raise NotFound()
        if self.script:
            self.obj = {**self.obj, "status": self.script.pop(0)}
        return self.obj

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.calls.append(("create", body))
        self.obj = body

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, patch):
        self.calls.append(("patch", patch))


def _status(created, ready, ok="True", reason=None):
    cond = {"type": "Ready", "status": ok, **({"reason": reason} if reason else {})}
    return {"conditions": [cond], "components": {"predictor": {"latestCreatedRevision": created, "latestReadyRevision": ready}}}


BODY = inference_service(KubeflowConfig(), "s3://models/export")


def _rollout(api, timeout=60):
    clock = iter(range(0, 10_000, 5))
    return canary_rollout(api, BODY, "ns", 10, timeout, poll_s=5, sleep=lambda s: None, clock=lambda: next(clock))


def test_a_first_deployment_is_created_and_waits_for_ready():
    api = FakeKServe(script=[_status("tavr-1", None, "Unknown"), _status("tavr-1", "tavr-1")])
    result = _rollout(api)
    assert result == {"action": "created", "revision": "tavr-1", "ready": True, "canary_percent": 100}
    assert api.calls[0][0] == "create"
    assert api.calls[0][1]["spec"]["predictor"]["containers"][0]["env"] == [{"name": "STORAGE_URI", "value": "s3://models/export"}]


def test_an_update_is_a_canary_that_must_become_a_new_ready_revision():
    api = FakeKServe(existing=BODY, script=[_status("tavr-1", "tavr-1"), _status("tavr-1", "tavr-1"),
                                            _status("tavr-2", "tavr-1"), _status("tavr-2", "tavr-2")])  # fmt: skip
    result = _rollout(api)
    assert result["action"] == "canary" and result["revision"] == "tavr-2" and result["canary_percent"] == 10
    (kind, patch), = api.calls
    assert kind == "patch" and patch["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert patch["spec"]["predictor"]["containers"][0]["env"][0]["value"] == "s3://models/export"


def test_a_canary_that_fails_or_never_gets_ready_is_rolled_back():
    failing = FakeKServe(existing=BODY, script=[_status("tavr-1", "tavr-1"),
                                                _status("tavr-2", "tavr-1", "False", "RevisionFailed")])  # fmt: skip
    with pytest.raises(RolloutFailed, match="RevisionFailed.*rolled back to tavr-1"):
        _rollout(failing)
    assert failing.calls[-1] == ("patch", {"spec": {"predictor": {"canaryTrafficPercent": 0}}})
    # the old revision staying ready is not success: the new one never appears
    stuck = FakeKServe(existing=BODY, script=[_status("tavr-1", "tavr-1")] * 100)
    with pytest.raises(RolloutFailed, match="timed out"):
        _rollout(stuck, timeout=30)
    assert stuck.calls[-1][1]["spec"]["predictor"]["canaryTrafficPercent"] == 0
    with pytest.raises(ValueError, match="canary"):
        canary_rollout(FakeKServe(), BODY, "ns", 120, 10)


def test_the_deployed_predictor_is_the_base_manifests_with_this_image_and_model():
    import yaml

    base = yaml.safe_load(open("manifests/base/inferenceservice.yaml"))["spec"]["predictor"]
    ours = inference_service(KubeflowConfig(image="registry/tavr:v2"), "s3://models/run-7")["spec"]["predictor"]
    (mine,), (theirs,) = ours["containers"], base["containers"]
    assert mine["image"] == "registry/tavr:v2" and mine["env"] == [{"name": "STORAGE_URI", "value": "s3://models/run-7"}]
    for key in ("name", "command", "args", "ports", "readinessProbe", "resources"):
        assert mine[key] == theirs[key], key
    assert {k: v for k, v in ours.items() if k != "containers"} == {k: v for k, v in base.items() if k != "containers"}
