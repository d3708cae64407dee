"""A small kustomize in Python for the manifests tests: load YAML, apply JSON 6902 patches, render a
kustomization, and build kserve/kubernetes model objects strictly (the generated clients' own
deserializers drop unknown fields, and kserve's cannot resolve the kubernetes types it embeds)."""

import copy
from pathlib import Path

import kserve.models
import kubernetes.client
import yaml

PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object}


def load(path: Path) -> list:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def build(data, klass: str):
    """`data` as the kserve/kubernetes model `klass`; an unknown field, a wrong type or a missing required one
    raises. Quantities are typed "dict(str, str)": quote them, as the API's JSON form does."""
    if klass.startswith("list["):
        assert isinstance(data, list), f"{klass}: {data!r}"
        return [build(d, klass[5:-1]) for d in data]
    if klass.startswith("dict("):
        assert isinstance(data, dict), f"{klass}: {data!r}"
        return {k: build(v, klass[5:-1].split(", ", 1)[1]) for k, v in data.items()}
    if klass in PRIMITIVES:
        assert isinstance(data, PRIMITIVES[klass]) and not (klass == "int" and isinstance(data, bool)), data
        return data
    cls = getattr(kserve.models, klass, None) or getattr(kubernetes.client, klass)
    fields = {json: attr for attr, json in cls.attribute_map.items()}
    assert isinstance(data, dict) and not set(data) - set(fields), f"{klass}: unknown {set(data) - set(fields)}"
    return cls(**{fields[k]: build(v, cls.openapi_types[fields[k]]) for k, v in data.items()})


def apply_patch(obj: dict, ops: list) -> dict:
    """RFC 6902 add/replace/remove/test, as kustomize applies a JSON 6902 patch."""
    obj = copy.deepcopy(obj)
    for op in ops:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node = obj
        for key in parents:
            node = node[int(key) if isinstance(node, list) else key]
        key = int(last) if isinstance(node, list) and last != "-" else last
        if op["op"] == "add" and isinstance(node, list):
            node.insert(len(node) if key == "-" else key, op["value"])
        elif op["op"] == "test":
            assert node[key] == op["value"], f"patch test failed at {op['path']}: {node[key]!r}"
        elif op["op"] == "remove":
            del node[key]
        elif op["op"] == "replace":
            assert isinstance(node, list) or key in node, f"replace of missing {op['path']}"
            node[key] = op["value"]
        else:
            assert op["op"] == "add", f"unsupported op {op['op']}"
            node[key] = op["value"]
    return obj


def render(folder: Path) -> list[dict]:
    """The objects `kubectl kustomize folder` prints, for the subset used here: resources (files, or folders
    with their own kustomization) and JSON 6902 patches, each with one target."""
    kust = load(folder / "kustomization.yaml")[0]
    paths = [folder / res for res in kust.get("resources", [])]
    objs = [obj for p in paths for obj in (render(p) if p.is_dir() else load(p))]
    for patch in kust.get("patches", []):
        t = patch["target"]
        want = (f"{t['group']}/{t['version']}" if t.get("group") else t["version"], t["kind"], t["name"])
        hits = [i for i, o in enumerate(objs) if (o["apiVersion"], o["kind"], o["metadata"]["name"]) == want]
        assert len(hits) == 1, f"{folder / patch['path']}: target {t} matches {len(hits)} objects"
        objs[hits[0]] = apply_patch(objs[hits[0]], load(folder / patch["path"])[0])
    return objs


def walk(node, key: str):
    """Every value stored under `key` anywhere in `node`."""
    if isinstance(node, dict):
        yield from [node[key]] if key in node else []
        yield from (v for child in node.values() for v in walk(child, key))
    elif isinstance(node, list):
        yield from (v for child in node for v in walk(child, key))
