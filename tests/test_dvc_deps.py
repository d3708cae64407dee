"""dvc.yaml's code dependencies are complete: every file of `tavr/` a stage's command can import is a
dependency of the stage (itself or through a folder), so editing it re-runs the stage.

The imports are read statically: the module a `python -m` command runs, or, for `tavr <command>`, the
body of that CLI function (and cli.py's own top-level imports), then every `tavr` import of those
files, at any depth and inside functions too (a lazy import runs as surely as a top-level one).
"""

import ast
import functools
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "tavr" / "cli.py"
SUBCOMMANDS = {"bench": "bench_app", "train": "train_app", "client": "client_app"}


def _module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(nodes: list[ast.AST], package: str) -> set[str]:
    """Names of the `tavr` modules imported anywhere inside `nodes` (`from a import b` gives a.b if it is a module)."""
    found = set()
    for node in (n for top in nodes for n in ast.walk(top)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names if _module_file(f"{base}.{a.name}")}
    return {n for n in found if n.split(".")[0] == "tavr" and _module_file(n)}


def _parents(name: str) -> set[str]:
    """The packages importing `name` executes first (tavr, tavr.train, ...)."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _closure(start: set[str]) -> set[Path]:
    seen, todo = set(), set(start)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo |= _module_imports(name) | _parents(name)
    return {_module_file(n) for n in seen}


@functools.cache
def _module_imports(name: str) -> frozenset[str]:
    """The `tavr` modules one module imports, parsed once for every stage that reaches it."""
    path = _module_file(name)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return frozenset(_imports([ast.parse(path.read_text())], package))


@functools.cache
def _cli_tree() -> ast.Module:
    return ast.parse(CLI.read_text())


def _cli_function(words: list[str]) -> ast.FunctionDef:
    """The function behind `tavr WORDS...`: a command (named by its decorator or its function's name), or a
    group's callback (`tavr bench --model ...`)."""
    commands, callbacks = {}, {}
    for fn in (n for n in _cli_tree().body if isinstance(n, ast.FunctionDef)):
        for dec in fn.decorator_list:
            target = dec.func if isinstance(dec, ast.Call) else dec
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
                if target.attr == "callback":
                    callbacks[target.value.id] = fn
                elif target.attr == "command":
                    named = dec.args[0].value if isinstance(dec, ast.Call) and dec.args else fn.name
                    commands[(target.value.id, named)] = fn
    if words[0] not in SUBCOMMANDS:
        return commands[("app", words[0])]
    group = SUBCOMMANDS[words[0]]
    return commands.get((group, words[1] if len(words) > 1 else ""), callbacks.get(group))


def _stage_code(cmd: str) -> set[Path]:
    words = cmd.split()
    if words[:2] == ["python", "-m"]:
        return _closure({words[2]})
    assert words[0] == "tavr", f"a stage runs `tavr ...` or `python -m tavr...`: {cmd}"
    top = [n for n in _cli_tree().body if isinstance(n, (ast.Import, ast.ImportFrom))]
    return _closure(_imports([_cli_function(words[1:]), *top], "tavr"))


def _stages() -> dict[str, dict]:
    """Every stage as DVC runs it: a foreach stage once per key (name@key), ${key} and ${item.x} filled in."""
    out = {}
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        if "foreach" not in stage:
            out[name] = stage
            continue
        template = yaml.safe_dump(stage["do"])
        for key, item in stage["foreach"].items():
            text = re.sub(r"\$\{item\.(\w+)\}", lambda m: str(item[m.group(1)]), template).replace("${key}", key)
            out[f"{name}@{key}"] = yaml.safe_load(text)
    return out


def _covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


def _trivial(path: Path) -> bool:
    """A file that only holds a docstring and constants: editing it cannot change what a stage computes."""
    body = ast.parse(path.read_text()).body
    return all(isinstance(n, (ast.Expr, ast.Assign)) and not isinstance(getattr(n, "value", None), ast.Call) for n in body)


def test_every_stage_depends_on_all_the_code_it_imports():
    missing = {}
    for name, stage in _stages().items():
        deps = [d for d in stage.get("deps", []) if isinstance(d, str)]
        code = {p for p in _stage_code(stage["cmd"]) if not _trivial(p) and p != CLI}
        absent = sorted(str(p.relative_to(ROOT)) for p in code if not _covered(p, deps))
        if absent:
            missing[name] = absent
    assert not missing, "dvc.yaml stages miss code they import:\n" + "\n".join(f"  {k}: {v}" for k, v in missing.items())


def test_the_import_reader_follows_lazy_and_relative_imports():
    # stage 1's training module imports the transformer, whose layers live in their own files
    code = {str(p.relative_to(ROOT)) for p in _stage_code("python -m tavr.train.stage1 --params params.yaml")}
    assert {"tavr/train/common.py", "tavr/models/transformer.py", "tavr/models/layers.py"} <= code
    # `tavr bench gallery` imports the benchmark inside its function body
    assert "tavr/eval/benchmark.py" in {str(p.relative_to(ROOT)) for p in _stage_code("tavr bench gallery")}
    # `tavr gate` reads the gate module and not the benchmark
    gate = {str(p.relative_to(ROOT)) for p in _stage_code("tavr gate")}
    assert "tavr/eval/gate.py" in gate and "tavr/pipeline.py" not in gate


def test_every_param_a_stage_lists_is_in_params_yaml():
    # DVC refuses to run a stage whose listed param is missing from the file (a default in tavr/config.py
    # does not count), so a key added to a dataclass but not to params.yaml breaks `dvc repro` mid-run
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    missing = []
    for name, stage in _stages().items():
        for entry in stage.get("params", []):
            for key in entry if isinstance(entry, dict) else [entry]:
                node = params
                for part in str(key).split("."):
                    if not isinstance(node, dict) or part not in node:
                        missing.append(f"{name}: {key}")
                        break
                    node = node[part]
    assert not missing, f"params.yaml lacks keys dvc.yaml stages list: {missing}"
