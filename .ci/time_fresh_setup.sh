#!/usr/bin/env bash
# Time the README's two set-up commands in a fresh clone and venv: the install, then `v2l demo`.
# Usage: bash .ci/time_fresh_setup.sh [WORK_DIR]   (prints the demo's output, then the seconds of each step)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d)}"
git clone --quiet "$repo" "$work/transformers-v2l"
cd "$work/transformers-v2l"
python3 -m venv .venv
# shellcheck disable=SC1091
source .venv/bin/activate
start=$(date +%s)
pip install --quiet torch==2.13.0 && pip install --quiet -e .
installed=$(date +%s)
v2l demo
done_at=$(date +%s)
echo "{\"install_seconds\": $((installed - start)), \"demo_seconds\": $((done_at - installed))}"
