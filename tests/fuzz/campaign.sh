#!/usr/bin/env bash
# A long fuzzing campaign: every target in turn, one at a time, at low CPU priority.
#
#   bash tests/fuzz/campaign.sh [SECONDS_PER_TARGET] [CORPUS_DIR]
#
# Defaults: 300 s per target, corpora kept in ${TMPDIR:-/tmp}/torviz-fuzz-corpus (so a second
# campaign starts where the first stopped; the corpora are not committed). Findings are saved in
# tests/fuzz/regressions/ as <target>-<kind>-<sha>.bin; the Markdown table of executions,
# coverage and findings per target is printed and appended to CORPUS_DIR/summary-<time>.md.
# Copy the table into tests/fuzz/README.md when the figures move.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-300}"
corpus="${2:-${TMPDIR:-/tmp}/torviz-fuzz-corpus}"
mkdir -p "$corpus"
summary="$corpus/summary-$(date -u +%Y%m%dT%H%M%SZ).md"
echo "fuzzing every target for ${seconds} s; corpora in ${corpus}; summary in ${summary}"
exec nice -n 10 .venv/bin/python tests/fuzz/run.py --all --seconds "$seconds" \
  --corpus "$corpus" --summary "$summary"
