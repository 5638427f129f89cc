"""recsys.settings: one table of environment variables, read by the settings, ops and the
error messages; the template sets each of them on the functions that read it."""
from __future__ import annotations

from pathlib import Path

import pytest

from local_stack.template import Template
from ops.environment import OUTPUTS
from recsys import wiring
from recsys.settings import ENVIRONMENT, Settings

ROOT = Path(__file__).resolve().parents[2]


def test_a_missing_setting_names_its_environment_variable() -> None:
    with pytest.raises(RuntimeError, match="set EVENTS_DLQ_URL, AB_VARIANTS$"):
        Settings().require("events_dead_letter_queue", "variants")
    with pytest.raises(RuntimeError, match="set PROFILES_TABLE, ITEMS_TABLE, EVENTS_STREAM"):
        wiring.recommender(Settings(artifacts_bucket="b"))


def test_every_variable_is_read_into_its_setting() -> None:
    settings = Settings.from_env({variable: f"value-of-{name}" for name, variable in ENVIRONMENT.items()})
    assert all(getattr(settings, name) == f"value-of-{name}" for name in ENVIRONMENT)


def test_the_template_sets_only_variables_the_table_knows_and_ops_maps_the_outputs_onto_them() -> None:
    template = Template(ROOT / "template.yaml", "recsys-settings", "us-east-1")
    template.attributes[("EventsDeadLetterQueue", "QueueUrl")] = "http://127.0.0.1/123456789012/dlq"
    known = set(ENVIRONMENT.values()) | {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_LOG_LEVEL", "LOG_LEVEL",
                                         "IMPRESSION_RETENTION_DAYS", "RECSYS_MODEL_DIR"}
    for name, function in template.functions().items():
        unknown = {v for v in function.environment if v not in known and not v.startswith("POWERTOOLS_")}
        assert not unknown, (name, unknown)
    assert set(OUTPUTS.values()) <= set(ENVIRONMENT.values())


def test_releases_are_downloaded_to_the_temporary_folder_unless_told_otherwise(tmp_path) -> None:
    import tempfile

    assert Settings.from_env({}).release_dir == Path(tempfile.gettempdir()) / "recsys-releases"
    assert Settings.from_env({"RECSYS_RELEASE_DIR": str(tmp_path)}).release_dir == tmp_path
    assert Settings.from_env({"RECSYS_RELEASE_DIR": "memory"}).release_dir is None
