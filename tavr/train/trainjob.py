"""A training stage past one node: a Kubeflow Trainer TrainJob running torchrun, and the wait for it.

    trainjob(cfg, name, module, params_file, section) -> the TrainJob object (a dict)
    run(api, job, namespace, timeout_s) -> the finished job; raises TrainJobFailed

The job runs under the `tavr-torch` TrainingRuntime (manifests/trainer/runtime.yaml), which
starts `cfg.trainer_nodes` pods with torchrun's rendezvous set up; each runs
`torchrun -m tavr.train.<module> --params <params_file> --section <section>`, so every process is
one DDP (or FSDP, `run.fsdp`) rank of the same stage code DVC runs on one machine. The params
file and every path it names live on the runs volume (`cfg.runs_pvc`, mounted at /runs in the
step and by the runtime in the trainer pods); the runtime also brings the W&B key from the
`tavr-wandb` secret when it exists (W&B logs online with `run.wandb_mode: online`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tavr.config import KubeflowConfig

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"


class TrainJobFailed(RuntimeError):
    pass


def trainjob(cfg: KubeflowConfig, name: str, module: str, params_file: str, section: str) -> dict:
    """The TrainJob for one stage (module: stage1 or stage3_rl) on `cfg.trainer_nodes` nodes, as
    manifests/trainer/trainjob.yaml: the runtime mounts the runs volume at /runs and brings the
    W&B key; torchrun reads nodes, ranks and the rendezvous from the PET_* variables it sets."""
    gpus = cfg.trainer_gpus_per_node
    limits = {"cpu": "16", "memory": "64Gi", **({"nvidia.com/gpu": str(gpus)} if gpus > 0 else {})}
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainJob",
        "metadata": {"name": name, "namespace": cfg.namespace, "labels": {"app.kubernetes.io/name": "tavr",
                                                                          "app.kubernetes.io/component": "train"}},
        "spec": {
            "runtimeRef": {"apiGroup": GROUP, "kind": "TrainingRuntime", "name": cfg.trainer_runtime},
            "trainer": {
                "image": cfg.gpu_image if gpus > 0 else cfg.image,
                "command": ["torchrun", "-m", f"tavr.train.{module}"],
                "args": ["--params", params_file, "--section", section, "--resume", "auto"],
                "numNodes": cfg.trainer_nodes,
                "resourcesPerNode": {"requests": {"cpu": "8", "memory": "32Gi"}, "limits": limits},
            },
        },
    }  # fmt: skip


def _condition(job: dict, kind: str) -> dict | None:
    for c in (job.get("status") or {}).get("conditions", []) or []:
        if c.get("type") == kind and c.get("status") == "True":
            return c
    return None


def run(api, job: dict, namespace: str, timeout_s: float, poll_s: float = 15.0,
        sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> dict:  # fmt: skip
    """Create the job (`api`: a kubernetes CustomObjectsApi) and wait until it completes; a failed or
    timed-out job is deleted (its pods hold GPUs) and raises TrainJobFailed."""
    name = job["metadata"]["name"]
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job)
    deadline = clock() + timeout_s
    while clock() < deadline:
        current = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        if _condition(current, "Complete"):
            return current
        failed = _condition(current, "Failed")
        if failed:
            api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            raise TrainJobFailed(f"TrainJob {namespace}/{name} failed: {failed.get('reason', '')} {failed.get('message', '')}".strip())
        sleep(poll_s)
    api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    raise TrainJobFailed(f"TrainJob {namespace}/{name} did not finish within {timeout_s:.0f} s (deleted)")
