"""Configuration precedence: file, then environment, then flags."""
import pytest

from qflow.config import Config, load_config
from qflow.errors import UserError


def test_flags_beat_the_environment_which_beats_the_file(tmp_path):
    path = tmp_path / "qflow.toml"
    path.write_text('broker_url = "redis://file"\ndatabase_url = "sqlite:///file.db"\n'
                    'default_queue = "fileq"\nresult_max_bytes = 10\n')
    env = {"QFLOW_DATABASE_URL": "sqlite:///env.db", "QFLOW_DEFAULT_QUEUE": "envq"}
    got = load_config(str(path), env=env, default_queue="flagq")
    assert (got.broker_url, got.database_url, got.default_queue, got.result_max_bytes) == (
        "redis://file", "sqlite:///env.db", "flagq", 10)


def test_defaults_are_the_embedded_mode():
    got = load_config(env={})
    assert got == Config() and got.embedded and got.database_url == "sqlite:///qflow.db"


def test_the_example_config_file_loads():
    from conftest import ROOT
    got = load_config(str(ROOT / "config" / "qflow.toml"), env={})
    assert got.default_queue == "default"


@pytest.mark.parametrize("text, message", [
    ("brokr = 1\n", "unknown key 'brokr'"),
    ("result_max_bytes = 'big'\n", "setting 'result_max_bytes' must be int"),
    ("= nonsense\n", "config file"),
])
def test_bad_config_files_are_refused(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_config(str(path), env={})
