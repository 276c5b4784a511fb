"""docker-compose.yaml, Dockerfile and .env.example hold together, checked without a Docker engine.

No Docker runs here, so the compose file is parsed with PyYAML (anchors and `<<` merges resolve as
compose resolves them) and its `${VAR}` references are interpolated from .env.example the way
`docker compose config` would, with the same `:-` defaults and `:?` errors.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"

AIRFLOW_SERVICES = {"airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker"}
ONE_OFF = {"airflow-init"}
BACKING_SERVICES = {"metadata-db", "redis", "warehouse"}
PROJECT_MOUNTS = {f"./{folder}": f"/opt/airflow/{folder}" for folder in ("dags", "plugins", "include", "tools")}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|_KEY$")

REFERENCE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<operator>:?[-?])(?P<argument>[^}]*))?\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")


class MissingVariable(Exception):
    """What `docker compose` reports for `${VAR:?message}` when VAR is unset or empty."""


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation: `$$` is a literal `$`; `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        operator, argument = match.group("operator"), match.group("argument")
        value = env.get(name)
        unset = value is None or (value == "" and operator is not None and operator.startswith(":"))
        if operator is not None and operator.endswith("?") and unset:
            raise MissingVariable(f"{name}: {argument}")
        if operator is not None and operator.endswith("-") and unset:
            return argument
        return value or ""

    return REFERENCE.sub(substitute, text)


def interpolated(node: object, env: dict[str, str]) -> object:
    if isinstance(node, dict):
        return {key: interpolated(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolated(item, env) for item in node]
    return interpolate(node, env) if isinstance(node, str) else node


def references(node: object) -> list[re.Match[str]]:
    """Every `${...}` in the file's strings (not `$$`)."""
    if isinstance(node, dict):
        return [match for value in node.values() for match in references(value)]
    if isinstance(node, list):
        return [match for item in node for match in references(item)]
    if isinstance(node, str):
        return [match for match in REFERENCE.finditer(node) if match.group(0) != "$$"]
    return []


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


RAW = yaml.safe_load(COMPOSE_FILE.read_text())
ENV = read_env_file(ENV_EXAMPLE)
COMPOSE = interpolated(RAW, ENV)
SERVICES: dict[str, dict] = COMPOSE["services"]


def environment(service: str) -> dict[str, str]:
    return SERVICES[service].get("environment", {})


def test_the_stack_has_every_service_and_nothing_else() -> None:
    assert set(SERVICES) == AIRFLOW_SERVICES | ONE_OFF | BACKING_SERVICES


def test_images_are_pinned() -> None:
    for name, service in SERVICES.items():
        image = service.get("image", "")
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: image {image!r} must name a tag other than latest"
    for name in ("metadata-db", "warehouse"):
        assert re.fullmatch(r"postgres:\d+\.\d+(-\w+)?", SERVICES[name]["image"]), SERVICES[name]["image"]
    assert re.fullmatch(r"redis:\d+\.\d+(-\w+)?", SERVICES["redis"]["image"]), SERVICES["redis"]["image"]


def airflow_pin() -> str:
    pins = dict(re.findall(r"^([A-Za-z0-9_.\[\]-]+)==(\S+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE))
    return pins["apache-airflow"]


def test_the_airflow_image_is_built_from_the_dockerfile_on_the_pinned_airflow() -> None:
    base = re.search(r"^FROM\s+apache/airflow:(?P<version>\d+\.\d+\.\d+)-python(?P<python>3\.\d+)\s*$", DOCKERFILE.read_text(), re.MULTILINE)
    assert base, "the Dockerfile must start FROM a pinned apache/airflow:<version>-python<version> tag"
    assert base["version"] == airflow_pin()
    assert base["python"] == f"{sys.version_info.major}.{sys.version_info.minor}", "the image runs the Python the tests run on"
    for name in AIRFLOW_SERVICES | ONE_OFF:
        build = SERVICES[name].get("build")
        context = build if isinstance(build, str) else (build or {}).get("context")
        assert context == ".", f"{name} must build the repository's Dockerfile"
        assert SERVICES[name]["image"].endswith(f":{airflow_pin()}"), f"{name}: tag the built image with the Airflow version"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_dockerfile_installs_requirements_txt_and_puts_include_on_the_path() -> None:
    instructions = dockerfile_instructions()
    copied = [shlex.split(arguments) for instruction, arguments in instructions if instruction == "COPY"]
    destination = next(words[-1] for words in copied if "requirements.txt" in words[:-1])
    installs = [shlex.split(arguments) for instruction, arguments in instructions if instruction == "RUN" and "pip" in arguments]
    assert any({"pip", "install", "-r", destination} <= set(words) and words[words.index("-r") + 1] == destination for words in installs), installs
    environment_lines = " ".join(arguments for instruction, arguments in instructions if instruction == "ENV")
    pythonpath = re.search(r"PYTHONPATH=(\S+)", environment_lines)
    assert pythonpath and "/opt/airflow/include" in pythonpath.group(1).split(":")
    assert {"/opt/airflow/dags/", "/opt/airflow/plugins/", "/opt/airflow/include/", "/opt/airflow/tools/"} <= {words[-1] for words in copied}


LONG_RUNNING = sorted(AIRFLOW_SERVICES | BACKING_SERVICES)


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_every_long_running_service_has_a_healthcheck_and_restarts(name: str) -> None:
    healthcheck = SERVICES[name].get("healthcheck", {})
    assert healthcheck.get("test") and not healthcheck.get("disable"), f"{name} has no healthcheck"
    assert healthcheck["test"][0] in {"CMD", "CMD-SHELL"}
    assert SERVICES[name].get("restart") == "always"


def test_the_init_job_migrates_both_databases_and_writes_every_login() -> None:
    init = SERVICES["airflow-init"]
    script = " ".join(init["command"])
    assert "airflow db migrate" in script and "python -m batchwatch migrate" in script
    assert init.get("restart") == "no", "a one-off job must not restart after it exits"
    users = [entry.split(":")[0] for entry in init["environment"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(",")]
    assert users == ["admin", "analyst"]
    for user in users:
        assert f'"{user}": os.environ["AIRFLOW_{user.upper()}_PASSWORD"]' in script
        assert RAW["services"]["airflow-init"]["environment"][f"AIRFLOW_{user.upper()}_PASSWORD"].startswith(f"${{AIRFLOW_{user.upper()}_PASSWORD:?")
    assert 'os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]' in script
    passwords_file = Path(init["environment"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    for name in AIRFLOW_SERVICES | ONE_OFF:
        assert any(mount.split(":")[1] == str(passwords_file.parent) for mount in SERVICES[name]["volumes"]), f"{name} cannot read the logins"


@pytest.mark.parametrize(
    "placeholder, exit_code",
    [pytest.param("change-me", 1, id="a-placeholder-stops-it"), pytest.param("s3cr3t-from-env", 0, id="real-secrets-pass")],
)
def test_the_init_job_stops_on_a_placeholder_secret(placeholder: str, exit_code: int) -> None:
    guard = SERVICES["airflow-init"]["command"][-1].splitlines()[0]
    assert "change-me" in guard and "exit 1" in guard
    result = subprocess.run(["bash", "-c", guard], env={"PATH": "/usr/bin:/bin", "WAREHOUSE_PASSWORD": placeholder}, capture_output=True, text=True)
    assert result.returncode == exit_code, result.stderr


@pytest.mark.parametrize("name", sorted(AIRFLOW_SERVICES | ONE_OFF))
def test_airflow_services_start_after_the_databases_and_the_init_job(name: str) -> None:
    depends_on = SERVICES[name]["depends_on"]
    for backing in BACKING_SERVICES:
        assert depends_on[backing] == {"condition": "service_healthy"}, f"{name} must wait for {backing} to be healthy"
    if name in AIRFLOW_SERVICES:
        assert depends_on["airflow-init"] == {"condition": "service_completed_successfully"}


def test_workers_wait_for_the_execution_api_and_every_healthy_condition_has_a_healthcheck() -> None:
    assert SERVICES["airflow-worker"]["depends_on"]["airflow-api-server"] == {"condition": "service_healthy"}
    for name, service in SERVICES.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in SERVICES, f"{name} depends on a service that does not exist: {dependency}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], f"{name} waits for {dependency} to be healthy, which has no healthcheck"


@pytest.mark.parametrize("name", sorted(AIRFLOW_SERVICES | ONE_OFF))
def test_airflow_services_mount_the_project_and_the_shared_artifact_store(name: str) -> None:
    mounts = {source: target for source, target, *_ in (mount.split(":") for mount in SERVICES[name]["volumes"])}
    for source, target in PROJECT_MOUNTS.items():
        assert mounts.get(source) == target, f"{name} must mount {source} at {target}"
        assert (ROOT / source).is_dir()
    assert (ROOT / "include" / "models").is_dir(), "the specs travel in the include/ mount"
    artifact_root = environment(name)["BATCHWATCH_ARTIFACT_ROOT"]
    artifact_volume = next((source for source, target in mounts.items() if target == artifact_root), None)
    assert artifact_volume in COMPOSE["volumes"], f"{name}: the artifact root {artifact_root} must be a named volume all services share"


def url(name: str, variable: str) -> tuple[str, str, str, int, str]:
    parts = urlsplit(environment(name)[variable])
    return parts.scheme, parts.username, parts.hostname, parts.port, parts.path.lstrip("/")


@pytest.mark.parametrize("name", sorted(AIRFLOW_SERVICES | ONE_OFF))
def test_airflow_runs_the_celery_executor_on_the_stack(name: str) -> None:
    env = environment(name)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith(".SimpleAuthManager")
    metadata = SERVICES["metadata-db"]["environment"]
    for variable in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND"):
        assert url(name, variable)[1:] == (metadata["POSTGRES_USER"], "metadata-db", 5432, metadata["POSTGRES_DB"])
        assert urlsplit(env[variable]).password == metadata["POSTGRES_PASSWORD"]
    assert url(name, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")[0] == "postgresql+psycopg2"
    assert url(name, "AIRFLOW__CELERY__RESULT_BACKEND")[0] == "db+postgresql"
    assert url(name, "AIRFLOW__CELERY__BROKER_URL")[:4] == ("redis", None, "redis", 6379)
    api = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert (api.hostname, api.path) == ("airflow-api-server", "/execution/")
    assert f"{api.port}:{api.port}" in SERVICES["airflow-api-server"]["ports"]
    # Every component signs and checks the same tokens.
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] and env["AIRFLOW__CORE__FERNET_KEY"] and env["AIRFLOW__API__SECRET_KEY"]


def test_the_warehouse_connection_points_at_the_warehouse_service() -> None:
    warehouse = SERVICES["warehouse"]["environment"]
    for name in AIRFLOW_SERVICES | ONE_OFF:
        assert url(name, "AIRFLOW_CONN_WAREHOUSE") == ("postgresql", warehouse["POSTGRES_USER"], "warehouse", 5432, warehouse["POSTGRES_DB"])
        assert urlsplit(environment(name)["AIRFLOW_CONN_WAREHOUSE"]).password == warehouse["POSTGRES_PASSWORD"]


def test_the_api_server_and_the_warehouse_are_published_on_the_readmes_ports() -> None:
    assert SERVICES["airflow-api-server"]["ports"] == ["8080:8080"]
    [warehouse_port] = SERVICES["warehouse"]["ports"]
    host, host_port, container_port = warehouse_port.split(":")
    assert (host, container_port) == ("127.0.0.1", "5432")
    readme = (ROOT / "README.md").read_text()
    assert f"@127.0.0.1:{host_port}/batchwatch" in readme and "http://localhost:8080" in readme


def test_the_readme_names_only_services_the_stack_has() -> None:
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"docker compose (?:exec|run --rm) ([\w-]+)", readme)) | set(re.findall(r"--scale ([\w-]+)=", readme))
    assert named and named <= set(SERVICES), named - set(SERVICES)


def test_the_worker_scales() -> None:
    worker = SERVICES["airflow-worker"]
    assert "container_name" not in worker and "ports" not in worker, "replicas of a named or port-publishing container collide"
    assert int(worker["deploy"]["replicas"]) >= 2
    assert RAW["services"]["airflow-worker"]["deploy"]["replicas"].startswith("${AIRFLOW_WORKER_REPLICAS:-")


def secret_settings(node: object, path: str = "") -> list[tuple[str, str]]:
    """(where, raw value) of every setting named like a secret, and every password inside a URL."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}"
            if isinstance(value, str) and SECRET_NAME.search(str(key)) and not str(key).endswith("_FILE"):
                found.append((where, value))
            found.extend(secret_settings(value, where))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found.extend(secret_settings(item, f"{path}[{index}]"))
    elif isinstance(node, str):
        for password in re.findall(r"://[^:/@\s]*:(\$\{[^}]*\}|[^@\s]+)@", node):
            found.append((path, password))
    return found


def test_no_secret_is_written_in_the_compose_file() -> None:
    settings = secret_settings(RAW)
    assert len(settings) >= 10, settings
    for where, value in settings:
        match = REFERENCE.fullmatch(value)
        assert match and match.group("name"), f"{where}: a secret must be a ${{VARIABLE}} from .env, not {value!r}"
        assert match.group("operator") in (None, ":?", "?"), f"{where}: a default would put a secret in the file: {value!r}"
        assert match.group("name") in ENV, f"{where}: {match.group('name')} is not in .env.example"


def test_every_variable_is_documented_or_defaulted_and_env_stays_out_of_git() -> None:
    for match in references(RAW):
        name = match.group("name") or match.group("bare")
        assert name in ENV or (match.group("operator") or "").endswith("-"), f"{name} has neither a default nor a line in .env.example"
    secrets = {name for name in ENV if SECRET_NAME.search(name)}
    assert secrets and all(ENV[name] == "change-me" for name in secrets), "commit placeholders, never a real secret"
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


def test_compose_refuses_to_start_without_the_secrets() -> None:
    required = {match.group("name") for match in references(RAW) if match.group("operator") in (":?", "?")}
    assert {"AIRFLOW_DB_PASSWORD", "WAREHOUSE_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET"} <= required
    for name in required:
        with pytest.raises(MissingVariable, match=name):
            interpolated(RAW, {key: value for key, value in ENV.items() if key != name})


@pytest.mark.parametrize(
    "text, env, expected",
    [
        pytest.param("${A}", {"A": "x"}, "x", id="braced"),
        pytest.param("$A/b", {"A": "x"}, "x/b", id="bare"),
        pytest.param("${A:-d}", {}, "d", id="default-when-unset"),
        pytest.param("${A:-d}", {"A": ""}, "d", id="colon-default-when-empty"),
        pytest.param("${A-d}", {"A": ""}, "", id="dash-default-only-when-unset"),
        pytest.param("$${HOSTNAME}", {"HOSTNAME": "x"}, "${HOSTNAME}", id="dollar-escape"),
    ],
)
def test_interpolation_follows_compose(text: str, env: dict[str, str], expected: str) -> None:
    assert interpolate(text, env) == expected
