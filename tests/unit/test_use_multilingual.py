"""The multilingual encoder's pieces that need no build: the SentencePiece model converted to a
`tokenizers` tokenizer.json segments as the package does, and the torch forward pass (the
graph the ONNX export is traced from) computes the package's numpy embeddings."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_build import use_multilingual

STRINGS = Path(__file__).parents[1] / "data" / "multilingual_strings.txt"


def mixed_language_strings() -> list[str]:
    """The hand-written strings (English, Chinese, German, Spanish, French, Japanese, Russian,
    Arabic, Portuguese, Italian, Dutch, Polish, Turkish, Korean, Thai, symbols, emoji, rare
    characters), each adjacent pair joined (code-switching), and whitespace/Unicode edge cases."""
    lines = [line for line in STRINGS.read_text(encoding="utf-8").split("\n") if line]
    pairs = [f"{a} {b}" for a, b in zip(lines, lines[1:], strict=False)]
    edges = ["e\u0301 n\u0303 combining", "new\nline and \r\n crlf", "\t\ttabs\t", "ideographic\u3000space",
             "zero\u200bwidth", "\u00a0nbsp\u00a0", "😀" * 5, "𠀀𠀁𪚥" * 3, "a" * 400, "中" * 300]
    return lines + pairs + edges


@pytest.fixture(scope="module")
def tokenizer():
    return use_multilingual.convert_tokenizer()


def test_the_converted_tokenizer_segments_every_string_as_the_package(tokenizer) -> None:
    texts = mixed_language_strings()
    assert len(texts) >= 250
    assert use_multilingual.segmentation_mismatches(tokenizer, texts) == []


def test_unknown_characters_stay_one_unk_each(tokenizer) -> None:
    """tokenizers' Unigram would fuse the three unknown emoji into one <unk>; SentencePiece does not."""
    ids = tokenizer.encode("🎬🍿😀").ids
    assert ids.count(use_multilingual.UNK_ID) == 3
    assert ids == use_multilingual.reference_ids(["🎬🍿😀"])[0]


def test_the_torch_forward_pass_is_the_packages(tokenizer) -> None:
    import torch

    texts = [line for line in mixed_language_strings() if line.strip()][:48]
    batch = tokenizer.encode_batch(texts)  # padded to the longest: the mask must hide the padding
    with torch.inference_mode():
        ours = use_multilingual.load_module()(torch.tensor([e.ids for e in batch]),
                                              torch.tensor([e.attention_mask for e in batch])).numpy()
    reference = use_multilingual.Reference().encode(texts)
    assert ours.shape == (len(texts), use_multilingual.DIM)
    assert np.max(np.abs(ours - reference)) < 1e-5
