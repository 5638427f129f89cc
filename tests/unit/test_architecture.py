"""The import rules of docs/ARCHITECTURE.md, read off the code: a change that breaks one
fails here, naming the file and the import."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECSYS = ROOT / "layers" / "recsys" / "recsys"
AWS_PACKAGES = ("boto3", "botocore", "pynamodb")


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def named(modules: set[str], *prefixes: str) -> set[str]:
    return {m for m in modules if any(m == p or m.startswith(f"{p}.") for p in prefixes)}


DOMAIN = sorted(p for p in RECSYS.glob("*.py") if p.name != "wiring.py")


@pytest.mark.parametrize("path", DOMAIN, ids=lambda p: p.name)
def test_the_domain_knows_nothing_of_aws_nor_of_the_adapters(path: Path) -> None:
    assert not named(imports(path), *AWS_PACKAGES, "recsys.adapters", "recsys.wiring"), path.name


@pytest.mark.parametrize("path", sorted(ROOT.glob("functions/*/app.py")), ids=lambda p: p.parent.name)
def test_handlers_get_their_services_from_the_wiring(path: Path) -> None:
    found = imports(path)
    assert not named(found, *AWS_PACKAGES, "recsys.adapters"), path
    assert "recsys.wiring" in found, path


@pytest.mark.parametrize("path", sorted((RECSYS / "adapters").glob("*.py")) + DOMAIN, ids=lambda p: p.name)
def test_the_layer_never_imports_the_build_job_the_local_stack_or_ops(path: Path) -> None:
    assert not named(imports(path), "model_build", "local_stack", "ops", "tests"), path.name


def test_only_the_adapters_ops_and_the_local_stack_import_boto3() -> None:
    allowed = (RECSYS / "adapters", ROOT / "ops", ROOT / "local_stack")
    offenders = []
    for path in [*ROOT.glob("functions/**/*.py"), *RECSYS.rglob("*.py"), *ROOT.glob("model_build/*.py")]:
        if not any(path.is_relative_to(folder) for folder in allowed) and named(imports(path), "boto3"):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_ranking_is_the_one_path_from_scores_to_lists() -> None:
    """Only recsys.ranking assembles lists from the selection steps; the service and the
    offline code call ranking, never selection's list steps or scoring's combine."""
    callers = {}
    for path in [*RECSYS.glob("*.py"), *ROOT.glob("model_build/*.py"), *ROOT.glob("scripts/*.py")]:
        text = path.read_text()
        if path.name in ("ranking.py", "selection.py", "scoring.py"):
            continue
        used = [name for name in ("selection.select(", "selection.best(", "scoring.combine(", "scoring.components(")
                if name in text]
        if used:
            callers[path.name] = used
    assert callers == {}
