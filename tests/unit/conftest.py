"""Shared fixtures for the unit tests."""
from __future__ import annotations

import importlib.util
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests reach nothing over a network, loopback included: AWS is moto in-process
    (mock_aws) or the in-memory stores of tests/fakes.py. A test that needs a server
    belongs in tests/integration."""
    connect = socket.socket.connect

    def refuse(self: socket.socket, address, *args, **kwargs):
        if self.family == socket.AF_UNIX:
            return connect(self, address, *args, **kwargs)
        raise RuntimeError(f"a unit test tried to connect to {address!r}: unit tests use no network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int, int], Path]:
    """A random-weight 2-layer BERT folder of the given hidden and intermediate sizes, with the
    real tokenizer, so model-build stages run on it in seconds (needs torch and transformers)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from model_build.paths import pretrained_model

    def build(hidden_size: int, intermediate_size: int) -> Path:
        folder = tmp_path_factory.mktemp(f"tiny-bert-{hidden_size}")
        torch.manual_seed(0)
        config = transformers.BertConfig(vocab_size=30522, hidden_size=hidden_size, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=intermediate_size,
                                         max_position_embeddings=128)
        transformers.BertModel(config).save_pretrained(str(folder))
        shutil.copyfile(pretrained_model() / "tokenizer.json", folder / "tokenizer.json")
        return folder

    return build


# The secret the API module with user tokens on is loaded with (tests sign tokens with it).
USER_TOKEN_SECRET = "unit-test-user-token-secret-0123456789"


@pytest.fixture(scope="module")
def api_module() -> Iterator[ModuleType]:
    """functions/api/app.py loaded with the template's environment: it builds clients only
    (no AWS call at import), so requests refused at the edge reach nothing. Needs the built
    int8 encoder (the module loads it)."""
    yield from _api_module("api_app_under_test", {})


@pytest.fixture(scope="module")
def api_module_with_user_tokens() -> Iterator[ModuleType]:
    """The same, with user tokens on (USER_TOKEN_SECRET set, as the UserTokenSecret parameter sets it)."""
    yield from _api_module("api_app_with_user_tokens", {"UserTokenSecret": USER_TOKEN_SECRET})


def _api_module(name: str, parameters: dict[str, str]) -> Iterator[ModuleType]:
    from local_stack.template import Template
    from recsys.settings import get_settings
    root = Path(__file__).resolve().parents[2]
    template = Template(root / "template.yaml", "recsys-local", "us-east-1", parameters)
    template.attributes[("EventsDeadLetterQueue", "QueueUrl")] = "http://127.0.0.1/123456789012/dlq"
    with pytest.MonkeyPatch.context() as patch:
        for variable, value in template.functions()["ApiFunction"].environment.items():
            patch.setenv(variable, value)
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        get_settings.cache_clear()
        spec = importlib.util.spec_from_file_location(name, root / "functions/api/app.py")
        module = importlib.util.module_from_spec(spec)
        patch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        get_settings.cache_clear()
        yield module
