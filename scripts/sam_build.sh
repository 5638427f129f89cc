#!/usr/bin/env bash
# Lint, validate and build the SAM application, then precompile its bytecode.
#
# Installs nothing. Needs:
#   - cfn-lint in .venv (override with CFN_LINT),
#   - the SAM CLI (override with SAM; default .venv-sam/bin/sam),
#   - a python3.12 on PATH for the python3.12 runtime; under pyenv this script
#     selects it with PYENV_VERSION unless one is already set.
#
# Bytecode: Lambda's file system is read-only, so modules without a .pyc are
# compiled on every cold start. `sam build` writes none, and `sam deploy` zips
# every file with a 1980 timestamp, which would make timestamp-checked .pyc files
# stale. The .pyc files are therefore written as unchecked-hash pycs, which
# Python loads without comparing them to the source.
set -euo pipefail

cd "$(dirname "$0")/.."

SAM="${SAM:-.venv-sam/bin/sam}"
CFN_LINT="${CFN_LINT:-.venv/bin/cfn-lint}"
TEMPLATE="${TEMPLATE:-template.yaml}"
BUILD_DIR=".aws-sam/build"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export SAM_CLI_TELEMETRY="${SAM_CLI_TELEMETRY:-0}"
if command -v pyenv >/dev/null 2>&1 && [[ -z "${PYENV_VERSION:-}" ]]; then
    export PYENV_VERSION="3.11.7:3.12.1"
fi
PYTHON312="${PYTHON312:-python3.12}"

step() { printf '\n==> %s\n' "$*"; }

step "cfn-lint $TEMPLATE"
"$CFN_LINT" "$TEMPLATE"

step "sam validate --lint"
"$SAM" validate --lint --template-file "$TEMPLATE"

step "sam build (runtime python from: $(command -v "$PYTHON312"), $("$PYTHON312" --version))"
"$SAM" build --template-file "$TEMPLATE" --build-dir "$BUILD_DIR"

# `sam build` installs every transitive dependency; these are not needed at run time.
# DomainLayer: pynamodb pulls botocore and its dependencies, which the python3.12
# runtime already provides with boto3; a copy in a layer would shadow the runtime's
# botocore under the runtime's boto3.
# EncoderLayer: tokenizers pulls huggingface_hub and its HTTP stack, used only by
# Tokenizer.from_pretrained (the layer loads tokenizer.json from disk);
# onnxruntime's training/export tools and numpy's tests are never imported.
# Distribution metadata of kept packages stays (onnxruntime reads it).
PRUNE_DOMAIN=(
    boto3 'boto3-*.dist-info' botocore 'botocore-*.dist-info' s3transfer 's3transfer-*.dist-info'
    jmespath 'jmespath-*.dist-info' 'jmespath-*.data' dateutil 'python_dateutil-*.dist-info'
    six.py 'six-*.dist-info' urllib3 'urllib3-*.dist-info'
)
PRUNE_ENCODER=(
    huggingface_hub 'huggingface_hub-*.dist-info' hf_xet 'hf_xet-*.dist-info'
    httpx httpx2 'httpx-*.dist-info' 'httpx2-*.dist-info' httpcore httpcore2
    'httpcore-*.dist-info' 'httpcore2-*.dist-info' h11 'h11-*.dist-info'
    anyio 'anyio-*.dist-info' sniffio 'sniffio-*.dist-info' idna 'idna-*.dist-info'
    certifi 'certifi-*.dist-info' truststore 'truststore-*.dist-info'
    click 'click-*.dist-info' filelock 'filelock-*.dist-info' fsspec 'fsspec-*.dist-info'
    tqdm 'tqdm-*.dist-info' yaml _yaml 'PyYAML-*.dist-info' 'pyyaml-*.dist-info'
    typer 'typer-*.dist-info' shellingham 'shellingham-*.dist-info'
    rich 'rich-*.dist-info' markdown_it 'markdown_it_py-*.dist-info' mdurl 'mdurl-*.dist-info'
    pygments 'pygments-*.dist-info' 'Pygments-*.dist-info'
    onnxruntime/transformers onnxruntime/tools onnxruntime/quantization
    onnxruntime/datasets onnxruntime/backend
    numpy/tests 'numpy/*/tests' 'numpy/*/*/tests' numpy/f2py numpy/_pyinstaller numpy/doc
    numpy/conftest.py
)

prune() {  # prune LAYER_DIR PATTERN...
    local root="$1"; shift
    local before after pattern path
    before="$(du -sb "$root" | cut -f1)"
    for pattern in "$@"; do
        for path in "$root"/$pattern; do
            [[ -e "$path" ]] && rm -rf -- "$path"
        done
    done
    after="$(du -sb "$root" | cut -f1)"
    printf '  %s: removed %s MiB\n' "$root" "$(awk -v b="$((before - after))" 'BEGIN { printf "%.1f", b / 1048576 }')"
}

step "prune run-time-unused dependencies from the layers"
prune "$BUILD_DIR/DomainLayer/python" "${PRUNE_DOMAIN[@]}"
prune "$BUILD_DIR/EncoderLayer/python" "${PRUNE_ENCODER[@]}"

step "precompile bytecode with $PYTHON312 (unchecked-hash)"
"$PYTHON312" -m compileall -q -j 0 --invalidation-mode unchecked-hash "$BUILD_DIR"

step "smoke-test the layers with $PYTHON312 (boto3 and botocore from the build machine stand in for the runtime's)"
RUNTIME_STANDIN="$(mktemp -d)"
trap 'rm -rf "$RUNTIME_STANDIN"' EXIT
for module in boto3 botocore s3transfer jmespath dateutil six.py urllib3; do
    found="$(ls -d .venv/lib/python3*/site-packages/"$module" 2>/dev/null | head -n1 || true)"
    [[ -n "$found" ]] && ln -s "$PWD/$found" "$RUNTIME_STANDIN/$module"
done
"$PYTHON312" -I - "$PWD/$BUILD_DIR/DomainLayer/python" "$PWD/$BUILD_DIR/EncoderLayer/python" "$RUNTIME_STANDIN" <<'PY'
import sys
sys.path[:0] = sys.argv[1:]
import numpy as np
import onnxruntime as ort
import tokenizers
import aws_lambda_powertools.event_handler
import aws_lambda_powertools.utilities.batch
import pynamodb.models
import encoder_model
import recsys

for module in (np, ort, tokenizers, pynamodb.models, encoder_model, recsys):
    assert module.__file__.startswith(tuple(sys.argv[1:3])), module.__file__
model = encoder_model.MODEL_DIR / "model.onnx"
if model.exists():
    tokenizer = tokenizers.Tokenizer.from_file(str(encoder_model.MODEL_DIR / "tokenizer.json"))
    tokenizer.no_padding()
    ids = tokenizer.encode("a quiet film about the sea").ids
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    feed = {"input_ids": np.array([ids], dtype=np.int64),
            "attention_mask": np.ones((1, len(ids)), dtype=np.int64)}
    (vector,) = session.run(None, feed)
    print(f"  encoder ok: {vector.shape}, onnxruntime {ort.__version__}")
else:
    print("  warning: no encoder_model/model.onnx in the layer (run `python -m model_build encoder`)")
print("  imports ok")
PY

step "built sizes, unzipped (Lambda limit: 250 MiB for a function plus its layers)"
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
size() { du -sb "$1" | cut -f1; }
limit=$((250 * 1024 * 1024))
layers=0
for layer in "$BUILD_DIR"/*Layer/; do
    bytes="$(size "$layer")"
    layers=$((layers + bytes))
    printf '  layer    %-18s %7s MiB\n' "$(basename "$layer")" "$(mib "$bytes")"
done
printf '  layers   %-18s %7s MiB\n' "(together)" "$(mib "$layers")"
status=0
for function in "$BUILD_DIR"/*Function/; do
    bytes="$(size "$function")"
    total=$((bytes + layers))
    printf '  function %-18s %7s MiB, with layers %7s MiB\n' \
        "$(basename "$function")" "$(mib "$bytes")" "$(mib "$total")"
    if (( total > limit )); then
        echo "error: $(basename "$function") with its layers exceeds 250 MiB unzipped" >&2
        status=1
    fi
done
exit "$status"
