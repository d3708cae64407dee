"""The multi-node TrainJob: its spec, and waiting on it against a scripted API server."""

import pytest

from tavr.config import KubeflowConfig
from tavr.train.trainjob import TrainJobFailed, run, trainjob


class FakeTrainer:
    def __init__(self, script):
        self.script, self.calls = list(script), []

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.calls.append(("create", body["metadata"]["name"]))

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        return {"status": {"conditions": self.script.pop(0) if self.script else []}}

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append(("delete", name))


CFG = KubeflowConfig(trainer_nodes=2, runs_pvc="tavr-runs")
JOB = trainjob(CFG, "tavr-stage1-x", "stage1", "/runs/stage1-job/params.yaml", "stage1")


def _run(api, timeout=100):
    clock = iter(range(0, 10_000, 10))
    return run(api, JOB, "ns", timeout, poll_s=10, sleep=lambda s: None, clock=lambda: next(clock))


def test_the_job_runs_the_stage_module_with_torchrun_on_every_node_as_the_template_does():
    import yaml

    trainer = JOB["spec"]["trainer"]
    assert trainer["command"] == ["torchrun", "-m", "tavr.train.stage1"]
    assert trainer["args"] == ["--params", "/runs/stage1-job/params.yaml", "--section", "stage1", "--resume", "auto"]
    assert trainer["numNodes"] == 2 and trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "1"
    assert trainer["image"] == CFG.gpu_image and JOB["spec"]["runtimeRef"]["name"] == CFG.trainer_runtime
    template = yaml.safe_load(open("manifests/trainer/trainjob.yaml"))
    assert JOB["spec"]["runtimeRef"] == template["spec"]["runtimeRef"]
    assert set(trainer) == set(template["spec"]["trainer"]) and trainer["command"] == template["spec"]["trainer"]["command"]
    assert trainer["resourcesPerNode"] == template["spec"]["trainer"]["resourcesPerNode"]


def test_waiting_returns_on_complete_and_deletes_failed_or_stuck_jobs():
    done = FakeTrainer([[], [{"type": "Created", "status": "True"}], [{"type": "Complete", "status": "True"}]])
    _run(done)
    assert done.calls == [("create", "tavr-stage1-x")]
    failed = FakeTrainer([[{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]])
    with pytest.raises(TrainJobFailed, match="BackoffLimitExceeded"):
        _run(failed)
    assert failed.calls[-1] == ("delete", "tavr-stage1-x")
    stuck = FakeTrainer([])
    with pytest.raises(TrainJobFailed, match="did not finish"):
        _run(stuck, timeout=50)
    assert stuck.calls[-1] == ("delete", "tavr-stage1-x")
