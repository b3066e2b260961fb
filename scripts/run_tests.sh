#!/usr/bin/env bash
# The whole test suite from scratch, as CI runs it (README.md "Run the tests"). Each part in its own venv:
#   .venv            newest dependencies: fast tests, slow tests, mypy, the docs site (mkdocs --strict)
#   .venv-lowest     every dependency at its declared floor (scripts/lowest_constraints.py): fast tests
#   .venv-metaworld  the Meta-World plugin, which pins mujoco==3.3.0: its tests and metarl's MuJoCo tests
# torch==2.13.0 (a CPU wheel) goes first into each venv, so that pip keeps that build.
set -euo pipefail
cd "$(dirname "$0")/.."

fresh_venv() {
    rm -rf "$1"
    python3 -m venv "$1"
    "$1/bin/pip" install -q torch==2.13.0
}

fresh_venv .venv
.venv/bin/pip install -q -e ".[dev,wandb,docs]" -e plugins/metarl-example
.venv/bin/python -m pytest -m "not slow"
.venv/bin/python -m pytest -m slow
.venv/bin/mypy
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$(mktemp -d)"

fresh_venv .venv-lowest
python3 scripts/lowest_constraints.py --extra dev --extra wandb > .venv-lowest/constraints.txt
.venv-lowest/bin/pip install -q -c .venv-lowest/constraints.txt -e ".[dev,wandb]" -e plugins/metarl-example
.venv-lowest/bin/python -m pytest -m "not slow"

fresh_venv .venv-metaworld
.venv-metaworld/bin/pip install -q -e ".[dev]" -e plugins/metarl-metaworld
.venv-metaworld/bin/python -m pytest plugins/metarl-metaworld/tests tests/test_mujoco.py
