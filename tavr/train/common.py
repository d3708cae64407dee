"""What every training stage shares: run config, accelerator, run folder, LR schedule,
EMA, safetensors checkpoints with exact resume, resumable data order, tracking, progress.

Counting convention: a *step* is one optimizer update (`grad_accum` micro-batches);
`run.steps`, the LR schedule, checkpoints and logged metrics all count steps.
`batch_size` is per process; the global batch is the concatenation over ranks in rank order.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import extract_model_from_parallel, gather_object
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions, get_model_state_dict, get_optimizer_state_dict, set_model_state_dict, set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor, distribute_tensor

from tavr.config import ConfigError, RunConfig, load_config, params_path, parse_sets
from tavr.files import safetensors_problem, sha256, write_json
from tavr.progress import bar as progress_bar


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every GPU). Use `seed + rank` for per-rank noise."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def auto_device(name: str = "auto") -> torch.device:
    """`auto`: the GPU when there is one, else the CPU; any other name as given (cpu, cuda, cuda:N).
    For the work outside an accelerator's loop (the latent cache, the pretraining curve)."""
    if name != "auto":
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_accelerator(run: RunConfig, run_dir: str | Path) -> Accelerator:
    """Accelerator for a plain process, DDP under `accelerate launch --multi_gpu --num_processes N` or torchrun
    (gloo on CPU), or FSDP2 when `run.fsdp`.

    The scheduler is not tied to the optimizer (`step_scheduler_with_optimizer=False`):
    `clip_and_step` steps it once per update, whatever the number of processes.
    """
    fsdp = None
    if run.fsdp:  # only built on request, for GPU runs of the large presets
        if not torch.cuda.is_available():
            raise ValueError("fsdp: true needs CUDA GPUs (accelerate would silently fall back to DDP on CPU)")
        from accelerate import FullyShardedDataParallelPlugin

        fsdp = FullyShardedDataParallelPlugin(
            fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
            transformer_cls_names_to_wrap=["TAVRBlock"], reshard_after_forward=True,
        )
    precision = run.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() else "no"
    return Accelerator(
        cpu=not torch.cuda.is_available(),  # without it accelerate ignores a multi-process launch on CPU
        mixed_precision=precision, gradient_accumulation_steps=run.grad_accum, project_dir=str(run_dir),
        fsdp_plugin=fsdp, step_scheduler_with_optimizer=False,
        # conditions are dropped some steps (no reference, no audio, no motion): their parameters get no gradient
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


class RunDir:
    """A run folder: `config.json`, `checkpoints/`, `dvclive/`, `metrics.json`. Only the main process writes."""

    def __init__(self, path: str | Path, config: dict[str, Any], accelerator: Accelerator | None = None):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.dvclive = self.path / "dvclive"
        self.metrics = self.path / "metrics.json"  # final summary, for a DVC `metrics:` entry
        if accelerator is None or accelerator.is_main_process:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            write_json(self.path / "config.json", config)
        if accelerator is not None:
            accelerator.wait_for_everyone()


def lr_lambda(run: RunConfig):
    """LR factor after `step` updates: (step + 1) / warmup, then cosine to `min_lr_ratio` at `steps`, or 1."""
    if run.schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {run.schedule!r}")

    def factor(step: int) -> float:
        if step < run.warmup_steps:
            return (step + 1) / run.warmup_steps
        if run.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - run.warmup_steps) / max(1, run.steps - run.warmup_steps))
        return run.min_lr_ratio + (1 - run.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def make_lr_schedule(optimizer: torch.optim.Optimizer, run: RunConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """`lr_lambda(run)` on `optimizer`; step it once per update (see `clip_and_step`)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(run))


def clip_and_step(accelerator: Accelerator, model, optimizer, scheduler, grad_clip: float) -> float | None:
    """After `accelerator.backward` inside `accelerator.accumulate(model)`: on an update boundary clip,
    step optimizer and scheduler, zero grads, and return the pre-clip grad norm; otherwise None."""
    if not accelerator.sync_gradients:
        return None
    norm = accelerator.clip_grad_norm_(model.parameters(), grad_clip) if grad_clip > 0 else None
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return None if norm is None else float(norm)


def _full(t: torch.Tensor) -> torch.Tensor:
    """A whole CPU tensor, gathering FSDP2 shards (a collective: every rank must call)."""
    return (t.full_tensor() if isinstance(t, DTensor) else t).detach().cpu()


@torch.no_grad()
def interpolate_weights(model: torch.nn.Module, start: dict[str, torch.Tensor], share: float) -> None:
    """Weight-space ensembling of a fine-tuned model with its start (WiSE-FT, Wortsman et al. 2022):
    every tensor of the model becomes share * its value + (1 - share) * start's (same names and shapes;
    start = the init's state dict). share 1 leaves the model as it is."""
    if share == 1.0:
        return
    for name, t in extract_model_from_parallel(model).state_dict().items():
        if name not in start or start[name].shape != t.shape:
            raise ValueError(f"cannot interpolate toward the init: its weights have no {name} of shape {tuple(t.shape)}")
        if t.is_floating_point():
            t.copy_((share * t.float() + (1 - share) * start[name].to(t.device).float()).to(t.dtype))


class EMA:
    """fp32 shadow of the trainable parameters: shadow = d * shadow + (1 - d) * param.

    Given the step, d warms up as min(decay, (1 + step) / (10 + step)) (diffusers' EMAModel): without it
    a 0.999 shadow is still 37% the initial weights after 1000 steps. Accepts wrapped (DDP/FSDP/compiled)
    or plain models; decay 0 disables it (every call a no-op).
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        params = extract_model_from_parallel(model).named_parameters()
        self.shadow = {n: p.detach().float().clone() for n, p in params if p.requires_grad} if decay > 0 else {}

    def decay_at(self, step: int | None) -> float:
        return self.decay if step is None else min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int | None = None) -> None:
        """Fold the model's parameters in; `step` (the optimizer steps taken) sets the warm-up."""
        decay = self.decay_at(step)
        for name, p in extract_model_from_parallel(model).named_parameters():
            if name in self.shadow:
                self.shadow[name].mul_(decay).add_(p.detach().float(), alpha=1 - decay)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        """Overwrite the model's trainable parameters with the EMA weights (for eval or export)."""
        for name, p in extract_model_from_parallel(model).named_parameters():
            if name in self.shadow:
                p.copy_(self.shadow[name].to(p.dtype))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: _full(t) for n, t in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.shadow):
            raise ValueError(f"EMA keys differ: {sorted(set(state) ^ set(self.shadow))[:5]}")
        for name, t in state.items():
            old = self.shadow[name]
            if isinstance(old, DTensor):
                t = distribute_tensor(t.to(old.device), old.device_mesh, old.placements)
            self.shadow[name] = t.to(old.device, torch.float32)


# ---- checkpoints: checkpoints/step_XXXXXXX/{model,ema,optimizer,rng}.safetensors + optimizer.json + state.json

_STEP_DIR = re.compile(r"step_(\d{7,})")
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)


def get_rng_state() -> dict[str, Any]:
    """This process's RNG states: python and numpy as JSON-able lists, torch CPU/CUDA as uint8 tensors."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(mt), gauss], "numpy": [name, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors refuses tensors that share memory (tied weights): copy the repeats."""
    seen, out = set(), {}
    for key, t in tensors.items():
        t = t.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        out[key] = t.clone() if ptr in seen else t
        seen.add(ptr)
    save_file(out, str(path))


def _inner(optimizer):
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps the torch one


def save_checkpoint(run_dir, step: int, model, optimizer, scheduler=None, ema: EMA | None = None,
                    rng_state: dict | None = None, data_state: dict | None = None, keep: int = 2,
                    accelerator: Accelerator | None = None) -> Path:
    """Write `run_dir/checkpoints/step_{step:07d}/` atomically (a `.tmp` folder, then a rename); keep the
    newest `keep` (0 = all). Every process must call it (FSDP gathers, per-rank RNG); only the main one writes.

    `rng_state` defaults to `get_rng_state()` now. Files: `model.safetensors` (trainable parameters and
    buffers, full tensors), `ema.safetensors`, `optimizer.safetensors` + `optimizer.json` (tensors keyed
    "param_fqn/name"; non-tensor state and param_groups), `rng.safetensors` ("torch.R", "cuda.R.i" per rank R),
    `state.json` (step, scheduler, data, python/numpy RNG per rank, grad-scaler state).
    """
    model_sd = get_model_state_dict(model, options=_FULL)
    optim_sd = get_optimizer_state_dict(model, _inner(optimizer), options=_FULL)
    ema_sd = ema.state_dict() if ema is not None else {}
    rngs = [rng_state or get_rng_state()]
    if accelerator is not None and accelerator.num_processes > 1:
        rngs = gather_object(rngs)
    if accelerator is not None and not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        return Path(run_dir) / "checkpoints" / f"step_{step:07d}"

    root = Path(run_dir) / "checkpoints"
    final, tmp = root / f"step_{step:07d}", root / f"step_{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _save_tensors(model_sd, tmp / "model.safetensors")
    _save_tensors(ema_sd, tmp / "ema.safetensors")
    optim_tensors, optim_meta = {}, {"state": {}, "param_groups": optim_sd["param_groups"]}
    for key, entry in optim_sd["state"].items():
        optim_meta["state"][key] = {k: v for k, v in entry.items() if not torch.is_tensor(v)}
        optim_tensors.update({f"{key}/{k}": v for k, v in entry.items() if torch.is_tensor(v)})
    _save_tensors(optim_tensors, tmp / "optimizer.safetensors")
    write_json(tmp / "optimizer.json", optim_meta)
    rng_tensors = {f"torch.{r}": s["torch"] for r, s in enumerate(rngs)}
    rng_tensors.update({f"cuda.{r}.{i}": t for r, s in enumerate(rngs) for i, t in enumerate(s["cuda"])})
    _save_tensors(rng_tensors, tmp / "rng.safetensors")
    scaler = accelerator.scaler if accelerator is not None else None
    write_json(tmp / "state.json", {
        "step": step, "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "data": data_state or {}, "world_size": len(rngs), "scaler": scaler.state_dict() if scaler else None,
        "rng": {"python": [s["python"] for s in rngs], "numpy": [s["numpy"] for s in rngs]},
    })
    # written last: a checkpoint without it (or whose files no longer match it) is never resumed
    write_json(tmp / MANIFEST, {p.name: {"bytes": p.stat().st_size, "sha256": sha256(p)} for p in sorted(tmp.iterdir())})
    if final.exists():  # the same step saved again: swap, so some copy always exists
        os.replace(final, final.with_name(final.name + ".old"))
    os.replace(tmp, final)
    shutil.rmtree(final.with_name(final.name + ".old"), ignore_errors=True)
    done = _finished(root)
    for old in done[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    for stale in root.glob("step_*.tmp"):  # left by a killed save
        shutil.rmtree(stale, ignore_errors=True)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return final


def load_checkpoint(path, model, optimizer, scheduler=None, ema: EMA | None = None,
                    accelerator: Accelerator | None = None) -> tuple[int, dict]:
    """Restore everything `save_checkpoint` wrote, RNGs last; returns (step, data_state)."""
    path = Path(path)
    state = json.loads((path / "state.json").read_text())
    _, unexpected = set_model_state_dict(
        model, load_file(str(path / "model.safetensors")), options=StateDictOptions(full_state_dict=True, strict=False))
    if unexpected:
        raise ValueError(f"{path}: checkpoint has weights the model lacks: {unexpected[:5]}")
    meta = json.loads((path / "optimizer.json").read_text())
    for key, t in load_file(str(path / "optimizer.safetensors")).items():
        fqn, name = key.rsplit("/", 1)
        meta["state"].setdefault(fqn, {})[name] = t
    opt = _inner(optimizer)
    tuples = [[k for k, v in group.items() if isinstance(v, tuple)] for group in opt.param_groups]
    set_optimizer_state_dict(model, opt, meta, options=StateDictOptions(full_state_dict=True, strict=False))  # unused params have no state
    for group, keys in zip(opt.param_groups, tuples):  # JSON turned tuples (betas) into lists
        group.update({k: tuple(group[k]) for k in keys})
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    if ema is not None:
        ema.load_state_dict(load_file(str(path / "ema.safetensors")))
    if accelerator is not None and accelerator.scaler is not None and state["scaler"]:
        accelerator.scaler.load_state_dict(state["scaler"])
    rank = (accelerator.process_index if accelerator is not None else 0) % state["world_size"]
    tensors = load_file(str(path / "rng.safetensors"))
    n_cuda = sum(k.startswith(f"cuda.{rank}.") for k in tensors)
    set_rng_state({"python": state["rng"]["python"][rank], "numpy": state["rng"]["numpy"][rank],
                   "torch": tensors[f"torch.{rank}"], "cuda": [tensors[f"cuda.{rank}.{i}"] for i in range(n_cuda)]})
    return state["step"], state["data"]


def after_step(run: RunConfig, run_dir, step: int, model, optimizer, scheduler, ema: EMA | None, data_state: dict,
               accelerator: Accelerator, stop_after: int | None) -> bool:  # fmt: skip
    """Every stage's end of step: checkpoint when `checkpoint_every` divides `step` or at the last step;
    True when this invocation must stop here (`stop_after`, for preemptible jobs and tests)."""
    if step % run.checkpoint_every == 0 or step == run.steps:
        save_checkpoint(run_dir, step, model, optimizer, scheduler, ema, get_rng_state(), data_state,
                        run.keep_checkpoints, accelerator)  # fmt: skip
    return stop_after is not None and step >= stop_after


def params_parser(description: str) -> argparse.ArgumentParser:
    """A command line with the `--params` option every stage module takes."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--params", default=None, help="params file (default: ./params.yaml if present, else the defaults)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override one value of the params, e.g. --set stage1.steps=10 (repeatable)")
    return ap


def parse_config(ap: argparse.ArgumentParser, argv: list[str] | None = None):
    """-> (config tree from --params, parsed args); a --params file that does not exist is a usage error."""
    args = ap.parse_args(argv)
    try:
        return load_config(params_path(args.params), parse_sets(args.sets)), args
    except ConfigError as e:  # a missing file, bad YAML, an unknown key or a value out of its range
        ap.error(str(e))


def stage_args(description: str, argv: list[str] | None = None, section: str = ""):
    """The command line every training stage shares -> (config tree, resume: "auto" | None | a folder,
    the params section it reads: `section` unless --section names another, e.g. image_stage1)."""
    ap = params_parser(description)
    ap.add_argument("--resume", default="auto", help="auto (latest checkpoint), never, or a checkpoint folder")
    ap.add_argument("--section", default=section, help=f"params section to read (default: {section})")
    root, args = parse_config(ap, argv)
    kind = type(getattr(root, section, None))
    if not isinstance(getattr(root, args.section, None), kind):
        ap.error(f"--section {args.section!r} is not a {kind.__name__} section of the params")
    return root, None if args.resume == "never" else args.resume, args.section


def _finished(root: Path) -> list[Path]:
    """Complete checkpoint folders under `root`, oldest first (`.tmp` and `.old` ones are not)."""
    found = [p for p in root.glob("step_*") if _STEP_DIR.fullmatch(p.name)] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name[5:]))


MANIFEST = "manifest.json"  # in every checkpoint folder, written last: {file: {"bytes", "sha256"}}
_NEEDED = ("state.json", "model.safetensors", "optimizer.safetensors", "optimizer.json", "rng.safetensors")


def checkpoint_problem(path: Path, hashes: bool = True) -> str | None:
    """Why checkpoint folder `path` cannot be resumed, or None. With a manifest, every file must have
    its size (and, with `hashes`, its sha256); a folder from before manifests must hold every file,
    each .safetensors exactly as long as its header says, and parseable JSON."""
    manifest = path / MANIFEST
    if manifest.is_file():
        try:
            files = json.loads(manifest.read_text())
        except ValueError:
            return f"{MANIFEST} is unreadable"
        for name, want in files.items():
            f = path / name
            if not f.is_file():
                return f"{name} is missing"
            if f.stat().st_size != want["bytes"]:
                return f"{name} has {f.stat().st_size} bytes, the manifest says {want['bytes']}"
            if hashes and sha256(f) != want["sha256"]:
                return f"{name} does not match its sha256 in the manifest"
        return None
    for name in _NEEDED:
        f = path / name
        if name.endswith(".safetensors"):
            why = safetensors_problem(f)
            if why:
                return f"{name} is {why}"
        else:
            try:
                json.loads(f.read_text())
            except (OSError, ValueError):
                return f"{name} is missing or not JSON"
    return None


def latest_checkpoint(run_dir, hashes: bool = False) -> Path | None:
    """The newest intact `checkpoints/step_XXXXXXX/` (unfinished `.tmp` folders are ignored). A damaged
    newer one is skipped with a warning that names it and the reason, so a resume falls back to the
    newest checkpoint that can be read; `hashes` also checks every file's sha256."""
    done = _finished(Path(run_dir) / "checkpoints")
    for path in reversed(done):
        why = checkpoint_problem(path, hashes)
        if why is None:
            return path
        warnings.warn(f"checkpoint {path} is damaged ({why}); falling back to an older one")
    return None


# run keys that change how long or how often, never what is learned: a run that differs only in
# these continues from its checkpoints
_SAFE_TO_CONTINUE = ("steps", "checkpoint_every", "keep_checkpoints", "log_every", "tracker", "wandb_project")


def comparable(config: Any) -> Any:
    """A config dict without the keys that only change how long or how often (and outputs)."""
    if isinstance(config, dict):
        return {k: comparable(v) for k, v in config.items()
                if not (k in _SAFE_TO_CONTINUE and not isinstance(v, dict)) and k not in ("out", "heldout")}
    return config


def _run_steps(config: Any) -> list[int]:
    """Every `run.steps` in a config dict (a stage's length)."""
    if not isinstance(config, dict):
        return []
    found = [config["run"]["steps"]] if isinstance(config.get("run"), dict) and "steps" in config["run"] else []
    return found + [s for v in config.values() if isinstance(v, dict) for s in _run_steps(v)]


def fresh_if_changed(run_dir, resume: str | None, config: dict[str, Any]) -> str | None:
    """`resume` unless run_dir holds a run of a different config.

    A change in how long or how often (`run.steps`, checkpoint and log intervals, the output folder)
    continues the run, unless the new length is shorter than a checkpoint already reached (its
    weights have trained longer than asked). Any other change would mix two experiments: the old run
    folder is moved aside whole (`run_dir.previous-N`, never deleted) and this run starts fresh.
    """
    run_dir = Path(run_dir)
    saved = run_dir / "config.json"
    if resume in (None, "never") or not saved.is_file():
        return resume
    old, new = json.loads(saved.read_text()), json.loads(json.dumps(config))
    done = latest_checkpoint(run_dir)
    reached = int(json.loads((done / "state.json").read_text())["step"]) if done is not None else 0
    longer = min(_run_steps(new), default=reached) >= reached  # a checkpoint past the asked length trained too long
    if old == new and longer:
        return resume
    if comparable(old) == comparable(new) and longer:
        print(f"{run_dir}: continuing the run; only its length or intervals changed", flush=True)
        return resume
    if os.environ.get("RANK", "0") != "0":  # the main process moves the folder; every rank starts fresh
        return None
    n = 1
    while run_dir.with_name(f"{run_dir.name}.previous-{n}").exists():
        n += 1
    aside = run_dir.with_name(f"{run_dir.name}.previous-{n}")
    run_dir.rename(aside)
    why = "another config" if comparable(old) != comparable(new) else f"a checkpoint at step {reached}, past the {min(_run_steps(new))} asked"
    warnings.warn(f"{run_dir} held a run with {why}: moved it to {aside}; starting fresh")
    return None


def resume_from(run_dir, resume: str | None) -> Path | None:
    """"auto": the latest checkpoint if any; None or "never": start fresh; else that checkpoint folder."""
    if resume in (None, "", "never"):
        return None
    if resume == "auto":
        return latest_checkpoint(run_dir, hashes=True)
    if not (Path(resume) / "state.json").is_file():
        raise FileNotFoundError(f"resume={resume!r} is not a checkpoint folder (no state.json)")
    why = checkpoint_problem(Path(resume))
    if why:
        raise ValueError(f"resume={resume!r} is damaged: {why}")
    return Path(resume)


class EpochShuffler:
    """Endless index batches (lists of `batch_size` ints), reshuffled every epoch from (seed, epoch).

    An epoch is cut into global batches of `batch_size * world` items (a remainder is dropped);
    rank r takes slice [r * batch_size, (r + 1) * batch_size) of each. So one process with
    `batch_size * world` sees exactly the ranks' batches concatenated in rank order.
    `state_dict()` = {"epoch", "position"} (global batches consumed this epoch).
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1):
        if num_items < batch_size * world:
            raise ValueError(f"{num_items} items cannot fill one global batch of {batch_size} x {world}")
        self.num_items, self.batch_size, self.seed, self.rank, self.world = num_items, batch_size, seed, rank, world
        self.epoch, self.position = 0, 0
        self._order: tuple[int, np.ndarray] | None = None

    @property
    def batches_per_epoch(self) -> int:
        return self.num_items // (self.batch_size * self.world)

    def __iter__(self) -> EpochShuffler:
        return self

    def __next__(self) -> list[int]:
        if self.position == self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        if self._order is None or self._order[0] != self.epoch:
            self._order = (self.epoch, np.random.default_rng([self.seed, self.epoch]).permutation(self.num_items))
        start = self.position * self.batch_size * self.world + self.rank * self.batch_size
        self.position += 1
        return self._order[1][start:start + self.batch_size].tolist()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def _truncate_tsv(dvclive_dir: Path, step: int) -> None:
    """Drop rows logged after `step` (a crash after the last checkpoint), so resumed rows follow in order."""
    for path in (dvclive_dir / "plots" / "metrics").rglob("*.tsv"):
        header, *rows = path.read_text().splitlines()
        col = header.split("\t").index("step")
        kept = [r for r in rows if int(r.split("\t")[col]) <= step]
        path.write_text("\n".join([header, *kept]) + "\n")


def logged_series(run_dir, name: str) -> list[float]:
    """Values of metric `name` logged to run_dir's dvclive TSV, in step order (empty if none)."""
    path = Path(run_dir) / "dvclive" / "plots" / "metrics" / f"{name}.tsv"
    if not path.is_file():
        return []
    header, *lines = path.read_text().splitlines()
    cols = header.split("\t")
    rows = [line.split("\t") for line in lines if line.strip()]
    s, v = cols.index("step"), cols.index(name)
    return [float(r[v]) for r in sorted(rows, key=lambda r: int(r[s]))]


def first_last(values: list[float], share: float = 0.1) -> tuple[float | None, float | None]:
    """Means over the first and the last `share` of a series (at least one value each; None when empty)."""
    if not values:
        return None, None
    k = max(1, int(len(values) * share))
    return float(np.mean(values[:k])), float(np.mean(values[-k:]))


class _TsvLive:
    """dvclive's metric layout (`plots/metrics/<name>.tsv`: step, value) without dvclive."""

    def __init__(self, directory: Path):
        self.dir, self.step = Path(directory) / "plots" / "metrics", 0
        self.dir.mkdir(parents=True, exist_ok=True)

    def log_metric(self, name: str, value: float) -> None:
        path = self.dir / f"{name}.tsv"
        new = not path.is_file()
        with path.open("a") as fh:
            if new:
                fh.write(f"step\t{name}\n")
            fh.write(f"{self.step}\t{value}\n")

    def log_image(self, name: str, image: np.ndarray) -> None:
        from PIL import Image

        (self.dir.parent / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(self.dir.parent / "images" / name)

    def next_step(self) -> None:
        self.step += 1

    def end(self) -> None:
        pass


class Tracker:
    """W&B (offline by default; never prompts; a failed start warns and is skipped) and dvclive metrics.

    dvclive writes `run_dir/dvclive/plots/metrics/<name>.tsv` (`dvc plots show run_dir/dvclive/plots/metrics`);
    it touches no dvc.yaml and makes no DVC experiment. With `resume_step`, rows are appended after it.
    Only the main process logs. `tracker="none"` or WANDB_MODE=disabled in the environment: no wandb at all.
    """

    def __init__(self, run: RunConfig, run_dir, config: dict[str, Any], accelerator: Accelerator | None = None,
                 resume_step: int | None = None):
        if run.tracker not in ("wandb", "none"):
            raise ValueError(f"tracker must be 'wandb' or 'none', got {run.tracker!r}")
        self.wandb = self.wandb_run = self.live = None
        if accelerator is not None and not accelerator.is_main_process:
            return
        run_dir = Path(run_dir)
        if run.dvclive:
            if resume_step is not None:
                _truncate_tsv(run_dir / "dvclive", resume_step)
            try:
                from dvclive import Live  # a slim training image may lack it: the same files are written then

                self.live = Live(dir=str(run_dir / "dvclive"), resume=resume_step is not None,
                                 save_dvc_exp=False, dvcyaml=False)
            except Exception as err:  # not installed, or a git repo without commits trips its experiment lookup
                warnings.warn(f"dvclive did not start ({type(err).__name__}: {err}); writing its TSV layout directly")
                self.live = _TsvLive(run_dir / "dvclive")
        mode = "disabled" if os.environ.get("WANDB_MODE") == "disabled" else run.wandb_mode
        if run.tracker == "wandb" and mode != "disabled":
            try:
                import wandb

                id_file = run_dir / "wandb_id"
                if resume_step is None or not id_file.is_file():
                    id_file.write_text(uuid.uuid4().hex[:8])
                self.wandb_run = wandb.init(
                    project=run.wandb_project, dir=str(run_dir), mode=mode, config=config, name=run_dir.name,
                    id=id_file.read_text().strip(), resume="allow",
                    settings=wandb.Settings(silent=True, console="off", save_code=False, x_disable_stats=True))
                self.wandb = wandb
            except Exception as err:  # tracking must never stop training
                warnings.warn(f"wandb did not start ({type(err).__name__}: {err}); continuing without it")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self.wandb_run is not None:
            self.wandb_run.log(metrics, step=step)
        if self.live is not None:
            self.live.step = step
            for name, value in metrics.items():
                self.live.log_metric(name, float(value))
            self.live.next_step()

    def log_image(self, step: int, name: str, image: np.ndarray) -> None:
        """An (H, W, 3) uint8 image; dvclive keeps the latest as `plots/images/<name>.png`."""
        if self.wandb_run is not None:
            self.wandb_run.log({name: self.wandb.Image(image)}, step=step)
        if self.live is not None:
            self.live.log_image(f"{name}.png", image)

    def close(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()
        if self.live is not None:
            self.live.end()


class Progress:
    """A tqdm bar over steps whose postfix shows the loss and samples/s."""

    def __init__(self, total: int, initial: int = 0, disable: bool = False):
        self.bar = progress_bar(total=total, initial=initial, disable=disable, unit="step", desc="train")
        self.last = time.perf_counter()

    def update(self, loss: float, samples: int) -> None:
        """One step done; `samples` = samples in it over all processes."""
        now = time.perf_counter()
        rate, self.last = samples / max(now - self.last, 1e-9), now
        self.bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{rate:.1f}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def progress(total: int, initial: int = 0, disable: bool = False) -> Progress:
    """`Progress(total, initial, disable)`; pass `disable=not accelerator.is_main_process`."""
    return Progress(total, initial, disable)
