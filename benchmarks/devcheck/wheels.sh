#!/usr/bin/env bash
# Wheels the GPU machine lacks, for benchmarks/device_check.py's search part.
#
# The device machine runs its own image's python3 (3.12, with torch, torchvision, timm, typer,
# rich, numpy, PyYAML, Pillow, scikit-learn) and reaches no package registry; rs-search start
# also needs optuna and its database stack. This downloads those wheels into .whl/ (ignored by
# git through .git/info/exclude), to be carried with `carry: [".whl"]` and installed there with
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
# Their other requirements (numpy, packaging, tqdm, PyYAML, typing-extensions, MarkupSafe) are
# in the machine's image. Versions: the project venv's.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  optuna==5.0.0 alembic==1.20.1 SQLAlchemy==2.1.9 Mako==1.4.3 colorlog==6.12.0
ls -l .whl
