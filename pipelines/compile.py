"""Compile the pipeline to Kubeflow's IR YAML.

    python -m pipelines.compile --out tavr_pipeline.yaml
"""

import argparse

from kfp import compiler

from pipelines.tavr_pipeline import tavr_pipeline


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tavr_pipeline.yaml", help="IR YAML to write")
    args = ap.parse_args(argv)
    compiler.Compiler().compile(tavr_pipeline, package_path=args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
