"""The components' base images: `kubeflow.image` / `kubeflow.gpu_image` of ./params.yaml (or
TAVR_PARAMS), the images `make image` builds. Read once, when the components are defined."""

import os
from pathlib import Path

from tavr.config import load_config

PARAMS_PATH = Path(os.environ.get("TAVR_PARAMS", "params.yaml"))
KUBEFLOW = load_config(PARAMS_PATH if PARAMS_PATH.is_file() else None).kubeflow
IMAGE, GPU_IMAGE = KUBEFLOW.image, KUBEFLOW.gpu_image
