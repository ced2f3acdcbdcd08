"""docker/: what can be checked without a Docker engine (none on this machine): the compose file against the Compose
Specification, its structure and its secrets, that each image installs exactly the lock file, and that the entry point
and what it starts exist."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nightrec.config import PROJECT_ROOT

DOCKER = PROJECT_ROOT / "docker"
DOCKERFILES = ("Dockerfile", "Dockerfile.training")


def _compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?message}``, ``${VAR?message}`` and ``$$`` as
    Compose substitutes them before it validates a file."""

    def value(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        present = name in env and (env[name] != "" or not (op or "").startswith(":"))
        if present:
            return env[name]
        if op in {":?", "?"}:
            raise ValueError(f"{name}: {arg}")
        return arg if op in {":-", "-"} else ""

    return _VARIABLE.sub(value, text)


def test_the_compose_file_is_valid_compose_specification_once_interpolated():
    """What `docker compose config` does: substitute the variables docker/.env gives (the example's, with a password
    filled in), resolve the YAML anchors, and parse by the Compose Specification (the compose-spec package: unknown
    keys, wrong types and unknown values are errors). A variable the file requires but the example lacks fails."""
    from compose_spec import PyCompose

    example = dict(line.split("=", 1) for line in (DOCKER / ".env.example").read_text().splitlines() if "=" in line)
    env = example | {"NIGHTREC_DB_PASSWORD": "not-a-secret"}
    resolved = yaml.safe_load(interpolate((DOCKER / "compose.yaml").read_text(), env))  # merge keys resolved here:
    compose = PyCompose.from_yaml(yaml.safe_dump(resolved, sort_keys=False))  # Compose reads them, the parser does not
    assert set(compose.service_names()) == set(_compose()["services"])
    with pytest.raises(ValueError, match="NIGHTREC_DB_PASSWORD"):
        interpolate((DOCKER / "compose.yaml").read_text(), example)  # the example leaves the password empty
    for service, key, value in (("redis", "restart", "sometimes"), ("postgres", "healthcheck", {"intervall": "5s"})):
        broken = copy.deepcopy(resolved)
        broken["services"][service][key] = value
        with pytest.raises(ValueError, match=key):
            PyCompose.from_yaml(yaml.safe_dump(broken))


def test_compose_interpolation_follows_the_specification():
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("${SET} ${SET:-d} ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $$HOME ${UNSET}", env) == (
        "v v d d  d $HOME "
    )
    with pytest.raises(ValueError, match="EMPTY: needed"):
        interpolate("${EMPTY:?needed}", env)
    assert interpolate("${EMPTY?needed}", env) == ""


def test_the_compose_file_names_real_images_orders_its_services_and_publishes_on_loopback_only():
    compose = _compose()
    services = compose["services"]
    assert {
        "postgres",
        "redis",
        "spark-master",
        "spark-worker",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-api-server",
        "airflow-init",
    } <= set(services)
    for name, service in services.items():
        assert "image" in service, name
        if "build" in service:
            assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).resolve().is_file()
            assert Path(service["build"]["dockerfile"]).name in DOCKERFILES, name
        elif not service["image"].startswith("nightrec"):
            assert re.fullmatch(r"[\w./-]+:\d[\w.-]*", service["image"]), f"{name}: pin the image's version"
        depends = service.get("depends_on", {})
        assert set(depends) <= set(services), name
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"
    scheduler = services["airflow-scheduler"]
    assert scheduler["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert services["airflow-init"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert scheduler["environment"]["NIGHTREC_PROFILE"] == "cluster"
    assert scheduler["command"] == ["airflow", "scheduler"]
    assert (DOCKER / "postgres-init.sql").is_file()


def test_every_secret_comes_from_the_environment_and_the_example_names_each_one():
    text = (DOCKER / "compose.yaml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    assert required == {"NIGHTREC_DB_PASSWORD"}
    example = dict(
        line.split("=", 1)
        for line in (DOCKER / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert required <= set(example) and example["NIGHTREC_DB_PASSWORD"] == ""  # a placeholder, no password
    assert not re.search(r"://[^$/\s:@]+:[^$\s@{]+@", text), "a URL with a literal password"
    for name, service in _compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if "PASSWORD" in key or "SQL_ALCHEMY_CONN" in key or "REGISTRY" in key:
                assert "${NIGHTREC_DB_PASSWORD" in str(value), (name, key)
    assert not (DOCKER / ".env").exists() or ".env" in (PROJECT_ROOT / ".gitignore").read_text()


def test_each_image_installs_exactly_the_lock_file_and_starts_through_the_entry_point():
    lock = "requirements/requirements.lock.txt"
    for name in DOCKERFILES:
        text = (DOCKER / name).read_text()
        installs = re.findall(r"pip install(?:[^\n\\]|\\\n)*", text)  # with its continued lines
        assert any(lock in i for i in installs), name
        for command in installs:  # nothing else: the lock, the connectors' driver, the project without deps
            words = [w for w in command.replace("\\\n", " ").split("&&")[0].split() if not w.startswith("-")]
            for word in words[2:]:
                assert word in (lock, "requirements/connectors.txt", ".") or word.startswith("https://"), (name, word)
        assert re.search(r"^FROM \S+:\S+", text, re.MULTILINE), f"{name}: the base image needs a version tag"
        assert 'ENTRYPOINT ["tini", "--", "docker/entrypoint.sh"]' in text


def test_the_entry_point_is_valid_shell_and_what_it_starts_exists_here():
    entry = DOCKER / "entrypoint.sh"
    assert os.access(entry, os.X_OK)
    subprocess.run(["bash", "-n", str(entry)], check=True)
    import pyspark

    spark_class = Path(pyspark.__file__).parent / "bin" / "spark-class"
    assert os.access(spark_class, os.X_OK)
    text = entry.read_text()
    for program in ("org.apache.spark.deploy.master.Master", "org.apache.spark.deploy.worker.Worker"):
        assert program in text
    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "nightrec").is_file() and "exec nightrec airflow" in text
