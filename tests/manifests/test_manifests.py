"""manifests/ and docker/: every kustomization is complete, and each one, rendered here (resources + JSON 6902
patches, no kustomize binary needed), holds only fields the kserve and kubernetes Python models know, with the
image, GPU, canary and secrets its environment needs."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from manifest_tools import build, load, render, walk  # tests/manifests/manifest_tools.py

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
IMAGES = {"cpu": "ghcr.io/tavr-platform/tavr:cpu", "cuda": "ghcr.io/tavr-platform/tavr:cuda"}
FOLDERS = ["base", "trainer", "overlays/local", "overlays/gpu-cluster"]  # every kustomization
MODELS = {"InferenceService": "V1beta1InferenceService", "PersistentVolumeClaim": "V1PersistentVolumeClaim",
          "ServiceAccount": "V1ServiceAccount"}  # fmt: skip
# The Trainer CRDs have no Python models: their fields come from kubeflow/trainer pkg/apis/trainer/v1alpha1
# (trainjob_types.go); the pods inside them are checked as kubernetes objects.
TRAINJOB_SPEC = {"runtimeRef", "initializer", "trainer", "suspend", "managedBy", "activeDeadlineSeconds"}
TRAINER = {"image", "command", "args", "env", "numNodes", "resourcesPerNode", "numProcPerNode"}


def predictor(folder: str) -> dict:
    (isvc,) = [o for o in render(MANIFESTS / folder) if o["kind"] == "InferenceService"]
    return isvc["spec"]["predictor"]


def test_kustomizations_are_complete_and_every_file_is_used():
    used = {MANIFESTS / "trainer" / "trainjob.yaml"}  # a template submitted by hand: applying it starts a run
    for kust_path in MANIFESTS.rglob("kustomization.yaml"):
        kust, folder = load(kust_path)[0], kust_path.parent
        for res in kust.get("resources", []):
            assert (folder / res).is_file() or (folder / res / "kustomization.yaml").is_file(), f"{kust_path}: {res}"
            used.add((folder / res).resolve())
        for patch in kust.get("patches", []):
            ops = load(folder / patch["path"])[0]
            assert isinstance(ops, list) and all({"op", "path"} <= set(op) for op in ops), f"{patch['path']}: not 6902"
            used.add((folder / patch["path"]).resolve())
    unused = {p.resolve() for p in MANIFESTS.rglob("*.yaml") if p.name != "kustomization.yaml"} - used
    assert not unused, f"YAML no kustomization lists: {sorted(map(str, unused))}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_rendered_objects_validate_against_the_python_models(folder):
    for obj in render(MANIFESTS / folder):
        if obj["kind"] == "TrainingRuntime":
            check_runtime(obj)
        else:
            build(obj, MODELS[obj["kind"]])


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl to compare with")
@pytest.mark.parametrize("folder", FOLDERS)
def test_render_agrees_with_kustomize(folder):
    cmd = ["kubectl", "kustomize", str(MANIFESTS / folder)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(yaml.safe_load_all(out), key=key) == sorted(render(MANIFESTS / folder), key=key)


def check_runtime(runtime: dict) -> None:
    """The Trainer runtime's pod: the torch policy's `node` container, in /runs on tavr-runs, with the W&B key."""
    assert set(runtime["spec"]) <= {"mlPolicy", "podGroupPolicy", "template"} and "torch" in runtime["spec"]["mlPolicy"]
    build(runtime["metadata"], "V1ObjectMeta")
    (node,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    job = build(node["template"], "V1JobTemplateSpec")
    assert node["name"] == "node" and job.metadata.labels["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
    pod = job.spec.template.spec
    (container,) = pod.containers
    assert container.name == "node" and container.working_dir == "/runs"
    claims = {v.name: v.persistent_volume_claim.claim_name for v in pod.volumes if v.persistent_volume_claim}
    assert {m.mount_path: claims.get(m.name) for m in container.volume_mounts}["/runs"] == "tavr-runs"
    (key,) = [e for e in container.env if e.name == "WANDB_API_KEY"]
    ref = key.value_from.secret_key_ref
    assert key.value is None and (ref.name, ref.key, ref.optional) == ("tavr-wandb", "api-key", True)


@pytest.mark.parametrize("folder", ["overlays/local", "overlays/gpu-cluster"])
def test_predictor_runs_tavr_serve_on_the_mounted_model(folder):
    (c,) = build({"spec": {"predictor": predictor(folder)}}, "V1beta1InferenceService").spec.predictor.containers
    assert c.name == "kserve-container" and c.command == ["tavr"] and c.args[0] == "serve"
    assert c.args[c.args.index("--model-dir") + 1] == "/mnt/models"
    port = int(c.args[c.args.index("--port") + 1])
    assert c.ports[0].container_port == port and c.readiness_probe.http_get.port == port
    assert c.readiness_probe.http_get.path == "/v2/models/tavr/ready"
    assert c.readiness_probe.failure_threshold * c.readiness_probe.period_seconds >= 300  # room for the warm-up
    assert c.env[0].name == "STORAGE_URI"  # the patches and the deploy step address it as env/0


def test_local_is_cpu_and_gpu_cluster_is_gpu_with_a_canary():
    base, local, gpu = predictor("base"), predictor("overlays/local"), predictor("overlays/gpu-cluster")
    assert "canaryTrafficPercent" not in base and "canaryTrafficPercent" not in local
    assert local["containers"][0]["image"] == IMAGES["cpu"] and "nvidia.com/gpu" not in str(local)
    assert local["containers"][0]["env"][0]["value"] == "pvc://tavr-models/export"
    assert gpu["containers"][0]["image"] == IMAGES["cuda"] and 0 < gpu["canaryTrafficPercent"] < 100
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["containers"][0]["env"][0]["value"].startswith("s3://")
    objs = render(MANIFESTS / "overlays/gpu-cluster")
    assert gpu["serviceAccountName"] in [o["metadata"]["name"] for o in objs if o["kind"] == "ServiceAccount"]


def test_trainjob_runs_a_stage_with_torchrun_on_several_gpu_nodes():
    (job,), (runtime,) = load(MANIFESTS / "trainer/trainjob.yaml"), load(MANIFESTS / "trainer/runtime.yaml")
    spec, trainer = job["spec"], job["spec"]["trainer"]
    assert (job["apiVersion"], job["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert set(spec) <= TRAINJOB_SPEC
    ref = {"apiGroup": "trainer.kubeflow.org", "kind": runtime["kind"], "name": runtime["metadata"]["name"]}
    assert spec["runtimeRef"] == ref and set(trainer) <= TRAINER and trainer["numNodes"] >= 2
    c = build({"name": "node", "image": trainer["image"], "command": trainer["command"], "args": trainer["args"],
               "env": trainer.get("env", []), "resources": trainer["resourcesPerNode"]}, "V1Container")  # fmt: skip
    assert c.command[:2] == ["torchrun", "-m"] and (ROOT / (c.command[2].replace(".", "/") + ".py")).is_file()
    assert c.command[2].startswith("tavr.train.") and "--section" in c.args
    assert c.args[c.args.index("--params") + 1].startswith("/runs/") and c.resources.limits["nvidia.com/gpu"] == "1"
    check_runtime(runtime)


def test_secrets_are_referenced_never_written():
    docs = [d for p in MANIFESTS.rglob("*.yaml") for d in load(p)]
    assert not [d for d in docs if isinstance(d, dict) and d.get("kind") == "Secret"]
    for env in (e for var in walk(docs, "env") for e in var):
        if re.search(r"KEY|TOKEN|SECRET|PASSWORD", env["name"]):
            assert "value" not in env and "secretKeyRef" in env["valueFrom"], env


def test_every_image_is_one_make_image_builds():
    docs = [d for p in MANIFESTS.rglob("*.yaml") for d in load(p)]
    patched = [op["value"] for ops in docs if isinstance(ops, list) for op in ops if op["path"].endswith("/image")]
    assert set(walk(docs, "image")) | set(patched) == set(IMAGES.values())
    makefile = (ROOT / "Makefile").read_text()
    torch = re.search(r"^TORCH := (\S+)", makefile, re.M).group(1)
    for flavour, image in IMAGES.items():
        assert f"IMAGE_{flavour.upper()} ?= {image}" in makefile and f"docker/Dockerfile.{flavour}" in makefile
        dockerfile = (ROOT / "docker" / f"Dockerfile.{flavour}").read_text()
        assert f"ARG TORCH={torch}" in dockerfile and "-r requirements.lock" in dockerfile and "--no-deps" in dockerfile
        # kfp components run their own command, and runAsNonRoot needs a numeric user
        assert re.search(r"^USER \d+$", dockerfile, re.M) and not re.search(r"^ENTRYPOINT", dockerfile, re.M)
