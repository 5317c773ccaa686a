"""The deployment files: docker-compose.yml parses and only runs commands the CLI has."""
import yaml
from conftest import ROOT

from qflow.cli.commands import cli


def test_compose_file_defines_a_scalable_cluster_whose_commands_exist():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "postgres", "migrate", "worker", "scheduler", "flower"} <= set(services)
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker    # --scale works
    for name, service in services.items():
        if service.get("image") == "qflow:local":
            command = service["command"]
            assert command[0] in cli.commands, (name, command)
            env = service["environment"]
            assert env["QFLOW_BROKER_URL"].startswith("redis://")
            assert env["QFLOW_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["scheduler"]["command"] == ["scheduler"]
    assert "container_name" not in services["scheduler"]            # may run twice (HA)
    assert services["worker"]["depends_on"]["migrate"]["condition"] == \
        "service_completed_successfully"
    assert "FLOWER_BASIC_AUTH" in services["flower"]["environment"]


def test_the_worker_image_installs_the_project_and_runs_qflow():
    dockerfile = (ROOT / "workers" / "Dockerfile").read_text()
    assert 'pip install' in dockerfile and ".[postgres]" in dockerfile
    entrypoint = (ROOT / "workers" / "entrypoint.sh").read_text()
    assert 'exec qflow "$@"' in entrypoint
