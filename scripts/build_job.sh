#!/usr/bin/env bash
# The whole build job in one process: on a GPU or CPU box, as a SageMaker training job's
# entry point, or as an AWS Batch job's command (README, "Deploying to AWS").
#
#   scripts/build_job.sh --data DATA_DIR --stack STACK_NAME [--finetune] [--steps N]
#
# The arguments are `python -m model_build all`'s. In a SageMaker job, whose
# hyperparameters arrive as `--name value` arguments, --data defaults to the "train"
# channel (SM_CHANNEL_TRAIN) and RECSYS_FINETUNE=1 in the environment adds --finetune.
# Installs what it needs into .venv first (make, Python 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
args=("$@")
if [[ -n "${SM_CHANNEL_TRAIN:-}" && " $* " != *" --data "* ]]; then
  args+=(--data "$SM_CHANNEL_TRAIN")
fi
if [[ "${RECSYS_FINETUNE:-0}" == "1" ]]; then
  args+=(--finetune)
fi
make .venv/.installed
exec .venv/bin/python -m model_build all "${args[@]}"
