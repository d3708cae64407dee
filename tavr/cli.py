"""`tavr` command line: one command per pipeline step, same functions DVC and kfp call.

Every command reads `params.yaml` from the working directory when it exists
(or the file given by `--params`); `--set KEY=VALUE` overrides any value of it
(`--set bench.limit=10`), and a command's own flags override single values.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from tavr.config import ConfigError, TAVRConfig, load_config, parse_sets
from tavr.progress import LOG_INTERVAL_S

app = typer.Typer(
    help="TAVR: talking avatars from a video reference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console(stderr=True, soft_wrap=True)  # a long path stays one piece: logs and tests read it whole

ParamsOpt = Annotated[Optional[Path], typer.Option("--params", help="params.yaml to read (default: ./params.yaml if present)")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE",
                                                     help="override one value of the params, e.g. --set bench.limit=10 (repeatable)")]


def _config(params: Path | None, sets: list[str] | None = None) -> TAVRConfig:
    path = params if params is not None else (Path("params.yaml") if Path("params.yaml").is_file() else None)
    try:
        return load_config(path, parse_sets(sets))
    except ConfigError as e:
        console.print(f"[red]config error:[/red] {e}")
        raise typer.Exit(2) from e


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
    )  # fmt: skip


def _bar(progress: Progress, description: str):
    """A task on `progress`; where stderr is not a terminal (DVC, kfp, a pod's log), where rich draws
    nothing until the end, also a plain line at most every LOG_INTERVAL_S seconds and at the end."""
    task = progress.add_task(description, total=None)
    start = last = time.monotonic()

    def update(done: int, total: int) -> None:
        nonlocal last
        progress.update(task, completed=done, total=total)
        now = time.monotonic()
        if not console.is_terminal and (now - last >= LOG_INTERVAL_S or done == total):
            last = now
            console.print(f"{description}: {done}/{total} in {now - start:.0f} s", markup=False, highlight=False)

    return update


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="output folder: <identity>/<scene>/<clip>.mp4 + mask + json")] = Path("data/synth"),
    identities: Annotated[Optional[int], typer.Option(help="number of identities (default: params synth.identities)")] = None,
    scenes: Annotated[Optional[int], typer.Option(help="number of scenes (default: params synth.scenes)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="random seed; the data set is a function of it")] = None,
    workers: Annotated[Optional[int], typer.Option(help="render processes (0 = one per core)")] = None,
    params: ParamsOpt = None,
    sets: SetOpt = None,
) -> None:
    """Render the TAVR-Synth data set (procedural talking heads with speech)."""
    from tavr.data import synth as synth_mod

    cfg = _config(params, sets).synth
    try:
        cfg = synth_mod.resized(cfg, identities, scenes)
    except ValueError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    if seed is not None:
        cfg = dataclasses.replace(cfg, seed=seed)
    if workers is not None:
        cfg = dataclasses.replace(cfg, workers=workers)
    start = time.perf_counter()
    with _progress() as progress:
        summary = synth_mod.generate(cfg, out, progress=_bar(progress, "synth"))
    console.print(
        f"wrote {summary['clips']} clips of {cfg.identities} identities x {cfg.scenes} scenes to {out} "
        f"in {time.perf_counter() - start:.1f} s (bench: {len(summary['identities']['bench'])} identities, "
        f"{len(summary['scenes']['bench'])} scenes)"
    )


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="SRC... OUT: source folders or CSV files, then the output folder")],
    pairs: Annotated[Optional[Path], typer.Option(help="where to write bench pairs (default: params ingest.pairs_out, "
                                                       "else OUT/bench_pairs.json)")] = None,
    force: Annotated[bool, typer.Option(help="replace a non-empty OUT that is not an earlier ingest output")] = False,
    params: ParamsOpt = None,
    sets: SetOpt = None,
) -> None:
    """Cut videos into face-centred clips; write manifest.parquet, quarantine.jsonl and bench pairs."""
    from tavr.data.ingest import check_output
    from tavr.data.ingest import ingest as run_ingest
    from tavr.data.pairs import make_pairs, write_pairs

    if len(paths) < 2:
        console.print("[red]error:[/red] give at least one source and the output folder: tavr ingest SRC... OUT")
        raise typer.Exit(2)
    *sources, out = paths
    cfg = _config(params, sets).ingest
    missing = [str(s) for s in sources if not s.exists()]
    if len(missing) == len(sources):
        console.print(f"[red]error:[/red] no source exists: {', '.join(missing)}")
        raise typer.Exit(2)
    for m in missing:
        console.print(f"[yellow]skipping missing source[/yellow] {m}")
    try:
        check_output(sources, out, force)
    except ValueError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    with _progress() as progress:
        summary = run_ingest(sources, out, cfg, progress=_bar(progress, "ingest"), force=force)
    table = Table(title=f"ingest -> {out}")
    table.add_column("what")
    table.add_column("count", justify="right")
    for key in ("videos", "clips", "identities", "scenes", "quarantined"):
        table.add_row(key, str(summary[key]))
    for split, n in summary["splits"].items():
        table.add_row(f"clips in {split}", str(n))
    for reason, n in summary["reasons"].items():
        table.add_row(f"[yellow]quarantined: {reason}[/yellow]", str(n))
    console.print(table)
    if summary["clips"] == 0:
        console.print(f"[red]error:[/red] no usable clips; reasons are in {out / 'quarantine.jsonl'}")
        raise typer.Exit(1)
    import pandas as pd

    bench = make_pairs(pd.read_parquet(out / "manifest.parquet"), cfg.bench_pairs, cfg.pairs_seed)
    pairs_path = pairs or (Path(cfg.pairs_out) if cfg.pairs_out else out / "bench_pairs.json")
    write_pairs(pairs_path, bench, out)
    if len(bench) < cfg.bench_pairs:
        console.print(f"[yellow]only {len(bench)} cross-scene bench pairs exist ({cfg.bench_pairs} asked for)[/yellow]")
    console.print(f"wrote {len(bench)} bench pairs to {pairs_path}")


@app.command()
def qa(
    manifest: Annotated[Path, typer.Argument(help="manifest.parquet written by `tavr ingest`")],
    report: Annotated[Path, typer.Option(help="folder for qa.json and data docs HTML")] = Path("reports/qa"),
    params: ParamsOpt = None,
    sets: SetOpt = None,
) -> None:
    """Validate a manifest with great-expectations; exit 1 naming every failed expectation."""
    from tavr.data.qa import format_failures, run_qa

    if not manifest.is_file():
        console.print(f"[red]error:[/red] manifest {manifest} does not exist")
        raise typer.Exit(2)
    result = run_qa(manifest, _config(params, sets).qa, report)
    passed = sum(r["success"] for r in result.results)
    if result.success:
        console.print(f"[green]QA passed[/green]: {passed} expectations over {result.n_clips} clips; report in {report}")
        return
    console.print(f"[red]QA failed[/red]: {len(result.failed)} of {len(result.results)} expectations over {result.n_clips} clips")
    console.print(format_failures(result), markup=False, highlight=False)
    console.print(f"report: {report / 'qa.json'}, {report / 'data_docs' / 'index.html'}")
    raise typer.Exit(1)


@app.command("init-model")
def init_model(
    out: Annotated[Path, typer.Option(help="pipeline folder to write")],
    wan: Annotated[Optional[Path], typer.Option(help="local diffusers WanTransformer3DModel folder to start from")] = None,
    wan_vae: Annotated[Optional[Path], typer.Option(help="local diffusers AutoencoderKLWan folder (Wan2.1 VAE)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the random initialisation")] = 0,
    params: ParamsOpt = None,
    sets: SetOpt = None,
) -> None:
    """Write an untrained pipeline folder (model config from params), or one converted from Wan2.1 weights."""
    from tavr.models.transformer import TAVRTransformer3DModel
    from tavr.models.vae import TAVRVAE, build_vae
    from tavr.pipeline import TAVRPipeline

    import torch

    cfg = _config(params, sets)
    try:
        torch.manual_seed(seed)
        model = TAVRTransformer3DModel.from_wan(wan, audio_dim=cfg.model.audio_dim) if wan else TAVRTransformer3DModel(cfg.model)
        vae = TAVRVAE.from_pretrained(wan_vae) if wan_vae else build_vae(cfg.generate.vae)
        pipe = TAVRPipeline(model, vae, cfg.generate)
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    pipe.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    console.print(f"wrote {out}: transformer {n / 1e6:.2f} M parameters ({'from ' + str(wan) if wan else 'random'}), VAE {'from ' + str(wan_vae) if wan_vae else cfg.generate.vae}")


@app.command()
def generate(
    model: Annotated[Path, typer.Option(help="pipeline folder (model_index.json, transformer/, vae/)")],
    reference: Annotated[Path, typer.Option(help="reference video of the person (its audio is the reference audio)")],
    background: Annotated[Path, typer.Option(help="target background: an image or a video")],
    audio: Annotated[Path, typer.Option(help="driving audio (wav/mp3/flac, or a video's audio track)")],
    out: Annotated[Path, typer.Option(help="output mp4 (H.264 + the driving audio)")],
    prompt: Annotated[str, typer.Option(help="optional text prompt")] = "",
    steps: Annotated[Optional[int], typer.Option(help="denoising steps (default: the model's)")] = None,
    keep_ratio: Annotated[Optional[float], typer.Option(help="share of reference tokens kept, (0, 1]")] = None,
    seed: Annotated[int, typer.Option(help="noise seed")] = 0,
) -> None:
    """Generate a talking video of the reference person in the target scene, speaking the audio."""
    from tavr.data.video import VideoError
    from tavr.pipeline import TAVRPipeline

    import warnings

    from tavr.data.video import check_writable

    for name, path in (("model", model), ("reference", reference), ("background", background), ("audio", audio)):
        if not path.exists():
            console.print(f"[red]error:[/red] --{name} {path} does not exist")
            raise typer.Exit(2)
    try:
        check_writable(out)
        if steps is not None and steps < 1:
            raise ValueError(f"--steps must be at least 1; got {steps}")
        if keep_ratio is not None and not 0 < keep_ratio <= 1:
            raise ValueError(f"--keep-ratio must be in (0, 1]; got {keep_ratio}")
        pipe = TAVRPipeline.from_pretrained(model)
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    with _progress() as progress, warnings.catch_warnings(record=True) as notes:
        warnings.simplefilter("always")
        try:
            result = pipe(
                reference, background, audio, prompt=prompt, num_steps=steps, keep_ratio=keep_ratio, seed=seed,
                out_path=out, progress=_bar(progress, "denoise"),
            )  # fmt: skip
        except (ValueError, VideoError) as e:
            console.print(f"[red]error:[/red] {e}")
            raise typer.Exit(2) from e
    for note in notes:
        if issubclass(note.category, UserWarning):
            console.print(f"[yellow]note:[/yellow] {note.message}")
    console.print(f"wrote {out}: {len(result.frames)} frames ({len(result.frames) / result.fps:.2f} s) in {result.seconds:.1f} s")


train_app = typer.Typer(help="Training stages (the same modules `dvc repro` runs): codec, latents, stage1-3, summary; vae (optional).",
                         no_args_is_help=True)
app.add_typer(train_app, name="train")
STAGES = {
    "codec": ("tavr.train.stage0_codec", "stage 0: fit the patch codec on the train clips (closed form, seconds)"),
    "vae": ("tavr.train.stage0_vae", "optional: train the learned tiny Wan VAE the codec replaced (for comparisons)"),
    "latents": ("tavr.train.latents", "encode every clip once into the latent cache"),
    "stage1": ("tavr.train.stage1", "same-scene video pretraining"),
    "stage2": ("tavr.train.stage2", "cross-scene reference fine-tuning from stage 1"),
    "stage3": ("tavr.train.stage3_rl", "Flow-GRPO RL on identity and lip-sync rewards from stage 2"),
}
ResumeOpt = Annotated[str, typer.Option(help="auto (latest checkpoint), never, or a checkpoint folder")]
SectionOpt = Annotated[Optional[str], typer.Option(help="params section to read instead of the stage's own "
                                                        "(image_stage1-3: the image-reference baseline)")]


def _stage_command(module: str, doc: str, resumable: bool):
    def command(params: ParamsOpt = None, sets: SetOpt = None, resume: ResumeOpt = "auto", section: SectionOpt = None) -> None:
        import importlib

        argv = (["--params", str(params)] if params else []) + (["--resume", resume] if resumable else [])
        argv += (["--section", section] if section else []) + [arg for item in sets or [] for arg in ("--set", item)]
        try:
            importlib.import_module(module).main(argv)
        except (ConfigError, FileNotFoundError, ValueError) as e:
            console.print(f"[red]error:[/red] {e}")
            raise typer.Exit(2) from e

    command.__doc__ = doc
    return command


for _name, (_module, _doc) in STAGES.items():
    train_app.command(_name)(_stage_command(_module, _doc, resumable=_name not in ("latents", "codec")))


@app.command()
def pretrain(
    params: ParamsOpt = None,
    sets: SetOpt = None,
    resume: Annotated[str, typer.Option(help="auto (continue the run in runs/pretrain) or never (refuse an existing run)")] = "auto",
    stop_after: Annotated[Optional[int], typer.Option(help="end this call at this step (a multiple of checkpoint_every)")] = None,
    export: Annotated[bool, typer.Option("--export", help="write models/base from the newest checkpoint now, finished or not")] = False,
) -> None:
    """Pretrain the tiny base on its own TAVR-Synth set (hours of CPU; resumable), with a quality curve."""
    from tavr.train import pretrain as pretraining

    cfg = _config(params, sets)
    try:
        if export:
            card = pretraining.export(cfg)
        else:
            card = pretraining.pretrain(cfg, None if resume == "never" else "auto", stop_after=stop_after)
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    if card:
        console.print(f"wrote {cfg.pretrain.train.out}: {card['steps']} steps, {card['samples_seen']} samples, "
                      f"{card['train_seconds']} s; card in {cfg.pretrain.train.out}/MODEL_CARD.md")
    else:
        console.print(f"stopped at a checkpoint; run again to continue (curve: {cfg.pretrain.train.run_dir}/curve.jsonl)")


@train_app.command("summary")
def train_summary(out: Annotated[Path, typer.Option(help="folder for summary.json and curves.png")] = Path("reports/train")) -> None:
    """Collect every stage's metrics.json into reports/train/summary.json, with loss and reward curves."""
    from tavr.train.summary import main as summary_main

    try:
        summary_main(["--out", str(out)])
    except FileNotFoundError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e


bench_app = typer.Typer(help="The cross-scene benchmark: generate and score every pair, or score another method's videos.",
                         invoke_without_command=True)
app.add_typer(bench_app, name="bench")


@bench_app.callback()
def bench(
    ctx: typer.Context,
    model: Annotated[Optional[Path], typer.Option(help="pipeline folder (default: bench.model)")] = None,
    pairs: Annotated[Optional[Path], typer.Option(help="bench pairs file (default: bench.pairs)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="output folder (default: bench.out)")] = None,
    steps: Annotated[Optional[int], typer.Option(help="sampler steps (default: bench.steps)")] = None,
    limit: Annotated[Optional[int], typer.Option(help="only the first N pairs outside bench.validation (0 = all; default: bench.limit, bench.ablation_limit for an ablation)")] = None,
    method: Annotated[Optional[str], typer.Option(help="name in the summary and report (default: bench.method)")] = None,
    protocol: Annotated[Optional[str], typer.Option(help="reference given: video | raw (its first frame) | adapted "
                                                         "(that frame put in the target scene) | wrong_ref (another person's video: the lower bound); default: bench.protocol")] = None,
    keep_ratio: Annotated[Optional[float], typer.Option(help="share of reference tokens kept (default: the model's)")] = None,
    reference_audio: Annotated[bool, typer.Option("--reference-audio/--no-reference-audio",
                                                  help="give the reference's own audio (off: the claims' ablation)")] = True,
    params: ParamsOpt = None,
    sets: SetOpt = None,
) -> None:
    """Generate every bench pair with a pipeline, save the mp4s, score them (pairs.csv, summary.json)."""
    if ctx.invoked_subcommand is not None:
        return
    from tavr.eval.benchmark import generate as run_bench
    from tavr.pipeline import TAVRPipeline

    cfg = _config(params, sets).bench
    method = method or cfg.method
    try:
        pipe = TAVRPipeline.from_pretrained(model or cfg.model)
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    out = out or Path(cfg.out)
    with _progress() as progress:
        try:
            summary = run_bench(pipe, pairs or cfg.pairs, out, steps or cfg.steps, cfg.limit_for(method) if limit is None else limit,
                                cfg.seed, method, cfg.identity_frames, cfg.max_offset, _bar(progress, f"bench {method}"),
                                protocol or cfg.protocol, cfg.frames, keep_ratio, reference_audio, cfg.gallery, cfg.validation)  # fmt: skip
        except (FileNotFoundError, ValueError) as e:
            console.print(f"[red]error:[/red] {e}")
            raise typer.Exit(2) from e
    _print_bench(summary, out)


@bench_app.command("report")
def bench_report(
    directory: Annotated[Optional[Path], typer.Option("--dir", help="folder of <method>/ results (default: bench.report)")] = None,
    pairs: Annotated[Optional[Path], typer.Option(help="bench pairs file, for frame grids (default: bench.pairs)")] = None,
    params: ParamsOpt = None,
    sets: SetOpt = None,
) -> None:
    """Every method side by side: index.html, summary.json, summary.md and plots/ in the folder."""
    from tavr.eval.report import build_report

    cfg = _config(params, sets).bench
    directory = directory or Path(cfg.report)
    try:
        summary = build_report(directory, cfg.methods, pairs or cfg.pairs, cfg.grid_pairs)
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    table = Table(title=f"cross-scene benchmark: {summary['pairs']} pairs")
    names = list(next(iter(summary["methods"].values())))
    table.add_column("method")
    for name in names:
        table.add_column(name, justify="right")
    for m, values in summary["methods"].items():
        table.add_row(m, *("n/a" if values[k] is None else f"{values[k]:.3f}" for k in names))
    console.print(table)
    missing = [m for m in cfg.methods if m not in summary["methods"]]
    if missing:
        console.print(f"[yellow]no results for {', '.join(missing)}[/yellow]")
    console.print(f"wrote {directory / 'index.html'}, {directory / 'summary.json'}, {directory / 'summary.md'}")


@app.command()
def gate(
    summary: Annotated[Optional[Path], typer.Option(help="report summary (default: gate.summary)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="decision file (default: gate.out)")] = None,
    params: ParamsOpt = None,
    sets: SetOpt = None,
) -> None:
    """Decide whether the candidate may be deployed (thresholds: the gate params); writes the decision."""
    from tavr.eval.gate import run_gate

    cfg = _config(params, sets).gate
    try:
        decision = run_gate(cfg, summary, out)
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    colour = "green" if decision["pass"] else "red"
    console.print(f"[{colour}]gate {'passed' if decision['pass'] else 'failed'}[/{colour}]")
    for reason in decision["reasons"]:
        console.print(f"  - {reason}")
    console.print(f"wrote {out or cfg.out}")


@app.command("export")
def export_model(
    gate_file: Annotated[Optional[Path], typer.Option("--gate", help="gate decision (default: gate.out)")] = None,
    model: Annotated[Optional[Path], typer.Option(help="candidate pipeline folder (default: gate.model)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="export folder (default: gate.export)")] = None,
    params: ParamsOpt = None,
    sets: SetOpt = None,
) -> None:
    """Copy the candidate to the export folder when the gate passed (export.json says either way)."""
    from tavr.eval.export import export

    cfg = _config(params, sets).gate
    try:
        info = export(gate_file or cfg.out, model or cfg.model, out or cfg.export)
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    if info["exported"]:
        console.print(f"[green]exported[/green] {info['model']} to {out or cfg.export}")
    else:
        console.print(f"[yellow]not exported[/yellow]: the gate did not pass; {out or cfg.export}/export.json says why")


@app.command()
def promote(
    src: Annotated[Optional[Path], typer.Option(help="exported model (default: gate.export)")] = None,
    dst: Annotated[Optional[Path], typer.Option(help="production registry (default: gate.production)")] = None,
    params: ParamsOpt = None,
    sets: SetOpt = None,
) -> None:
    """Register the exported model as production: later gates compare candidates with it."""
    from tavr.eval.export import promote as run_promote

    cfg = _config(params, sets).gate
    try:
        run_promote(src or cfg.export, dst or cfg.production)
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    console.print(f"promoted {src or cfg.export} to {dst or cfg.production}")


def _print_bench(summary: dict, out: Path) -> None:
    table = Table(title=f"{summary['method']}: {summary['scored']} of {summary['pairs']} pairs")
    table.add_column("metric")
    table.add_column("mean", justify="right")
    for name, value in summary["metrics"].items():
        table.add_row(name, "n/a" if value is None else f"{value:.4f}")
    console.print(table)
    if summary["missing"]:
        console.print(f"[yellow]no video for {len(summary['missing'])} pairs[/yellow] (listed in summary.json)")
    for fail in summary.get("failed", []):
        console.print(f"[yellow]{fail['pair_id']} failed:[/yellow] {fail['reason']}")
    if summary.get("short"):
        console.print(f"[yellow]{len(summary['short'])} videos are shorter than their driving audio[/yellow] (listed in summary.json)")
    console.print(f"wrote {out / 'pairs.csv'}, {out / 'summary.json'}")


@bench_app.command("gallery")
def bench_gallery(
    pairs: Annotated[Optional[Path], typer.Option(help="bench pairs file (default: bench.pairs)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="gallery file (default: bench.gallery)")] = None,
    params: ParamsOpt = None,
    sets: SetOpt = None,
) -> None:
    """Embed every bench person's reference clips once: the gallery every method is identified against."""
    from tavr.eval.benchmark import write_gallery

    cfg = _config(params, sets).bench
    try:
        info = write_gallery(pairs or cfg.pairs, out or cfg.gallery, identity_frames=cfg.identity_frames, limit=cfg.limit,
                             validation=cfg.validation)  # fmt: skip
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    console.print(f"wrote {info['out']}: {info['people']} people, {info['references']} reference embeddings")


@bench_app.command("score")
def bench_score(
    out: Annotated[Path, typer.Option(help="output folder for pairs.csv and summary.json")],
    pred_dir: Annotated[Optional[Path], typer.Option(help="folder of <pair_id>.mp4 videos made by any method")] = None,
    targets: Annotated[bool, typer.Option("--targets", help="score each pair's own target clip: the upper bound")] = False,
    pairs: Annotated[Optional[Path], typer.Option(help="bench pairs file (default: bench.pairs)")] = None,
    method: Annotated[str, typer.Option(help="name in the summary")] = "external",
    limit: Annotated[Optional[int], typer.Option(help="only the first N pairs (0 = all)")] = None,
    params: ParamsOpt = None,
    sets: SetOpt = None,
) -> None:
    """Score another method's videos (StableAvatar, OmniAvatar, HuMo, ...) on the same pairs and metrics."""
    from tavr.eval.benchmark import score_dir

    cfg = _config(params, sets).bench
    if (pred_dir is None) == (not targets):
        console.print("[red]error:[/red] give one of --pred-dir DIR (a method's videos) or --targets (the target clips)")
        raise typer.Exit(2)
    try:
        summary = score_dir(pred_dir, pairs or cfg.pairs, out, method, cfg.limit_for(method) if limit is None else limit,
                            identity_frames=cfg.identity_frames, max_offset=cfg.max_offset, frames=cfg.frames,
                            gallery_file=cfg.gallery, validation=cfg.validation)  # fmt: skip
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    _print_bench(summary, out)


@app.command()
def serve(
    model_dir: Annotated[Optional[Path], typer.Option(help="pipeline folder to serve (default: serve.model_dir)")] = None,
    host: Annotated[Optional[str], typer.Option(help="address to listen on (default: serve.host, 127.0.0.1; 0.0.0.0 for every interface)")] = None,
    port: Annotated[Optional[int], typer.Option(help="HTTP port (default: serve.port)")] = None,
    allowed_root: Annotated[Optional[Path], typer.Option(help="folder that <field>_uri inputs may read from")] = None,
    queue_size: Annotated[Optional[int], typer.Option(help="requests that may wait behind the running one")] = None,
    params: ParamsOpt = None,
    sets: SetOpt = None,
) -> None:
    """Serve a pipeline folder over KServe's V1 and V2 protocols (ready after a warm-up generation)."""
    from tavr.serve.predictor import serve as run_server

    cfg = _config(params, sets).serve
    given = {"model_dir": model_dir, "host": host, "port": port, "allowed_root": allowed_root, "queue_size": queue_size}
    cfg = dataclasses.replace(cfg, **{k: (str(v) if isinstance(v, Path) else v) for k, v in given.items() if v is not None})
    console.print(f"loading {cfg.model_dir} and warming up; then serving http://{cfg.host}:{cfg.port}/v1/models/{cfg.name}:predict")
    try:
        run_server(cfg)
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e


client_app = typer.Typer(help="Call a running TAVR server.", no_args_is_help=True)
app.add_typer(client_app, name="client")


@client_app.command("generate")
def client_generate(
    reference: Annotated[Path, typer.Option(help="reference video of the person")],
    background: Annotated[Path, typer.Option(help="target background: an image or a video")],
    audio: Annotated[Path, typer.Option(help="driving audio (wav/mp3/flac)")],
    out: Annotated[Path, typer.Option(help="mp4 to write")],
    url: Annotated[str, typer.Option(help="server base URL")] = "http://localhost:8080",
    name: Annotated[str, typer.Option(help="model name on the server")] = "tavr",
    protocol: Annotated[str, typer.Option(help="v1 or v2 (Open Inference Protocol)")] = "v1",
    reference_audio: Annotated[Optional[Path], typer.Option(help="reference audio (default: the reference video's)")] = None,
    prompt: Annotated[Optional[str], typer.Option(help="text prompt")] = None,
    steps: Annotated[Optional[int], typer.Option(help="denoising steps (default: the model's)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="noise seed")] = None,
    keep_ratio: Annotated[Optional[float], typer.Option(help="share of reference tokens kept, (0, 1]")] = None,
    guidance: Annotated[Optional[float], typer.Option(help="guidance scale (1 = off)")] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the answer")] = 900.0,
    retries: Annotated[int, typer.Option(help="retries after a 503 (the server's Retry-After apart)")] = 3,
) -> None:
    """Send files to a TAVR server and write the generated mp4."""
    import httpx

    from tavr.serve.client import ClientError, generate as client_call

    try:
        answer = client_call(
            url, reference, background, audio, out, name=name, protocol=protocol, reference_audio=reference_audio,
            timeout=timeout, retries=retries, prompt=prompt, steps=steps, seed=seed, keep_ratio=keep_ratio, guidance=guidance,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    except ClientError as e:
        console.print(f"[red]server answered:[/red] {e}")
        raise typer.Exit(1) from e
    except httpx.HTTPError as e:
        console.print(f"[red]cannot reach {url}:[/red] {e}")
        raise typer.Exit(1) from e
    console.print(f"wrote {out}: {answer['duration_s']:.2f} s of video in {answer['seconds']:.1f} s (model {answer['model_version']})")


@app.command("config")
def show_config(params: ParamsOpt = None, sets: SetOpt = None) -> None:
    """Print the resolved config tree (defaults, preset and params.yaml merged)."""
    from tavr.config import to_dict

    typer.echo(json.dumps(to_dict(_config(params, sets)), indent=2))


if __name__ == "__main__":
    app()
