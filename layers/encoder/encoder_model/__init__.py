"""The sentence encoder shipped as a Lambda layer.

model.onnx (int8), tokenizer.json and manifest.json sit beside this file. They are
built by `python -m model_build encoder`, never committed.
"""
from pathlib import Path

MODEL_DIR = Path(__file__).parent
