"""Kubeflow components: one typed adapter per pipeline step over the function in `tavr.steps`
that calls the same library code as the step's DVC stage, given only its own sections of the params
(split_params, the first step). Each component body imports what it
needs (kfp ships the function's source to the step's container), turns artifacts into folders,
and logs the step's numbers as Metrics."""

from components.data import ingest, qa
from components.deploy import deploy
from components.evaluate import bench, export, gate, report, upper_bound
from components.params import split_params
from components.train import codec, latents, rl_stage, train_stage

__all__ = ["bench", "codec", "deploy", "export", "gate", "ingest", "latents", "qa", "report", "rl_stage", "split_params", "train_stage", "upper_bound"]
