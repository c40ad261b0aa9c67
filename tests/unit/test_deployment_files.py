"""Dockerfile, .dockerignore, docker-compose.yml and the local images of deploy/images: what a
`docker compose up` relies on, checked without a Docker engine (the files are parsed, nothing is
built; `make compose-smoke` and `make test-containers` run them for real)."""

import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer.main
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from cli.topology import BrokerUser, password_hash
from contracts.settings import CONSUMER_GRACEFUL_TIMEOUT_SECONDS, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"
CONSTRAINTS = ROOT / "constraints.txt"
MAKEFILE = ROOT / "Makefile"
DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"
LOCAL_IMAGES = ROOT / "deploy" / "images"
CONTAINER_ENGINE = ROOT / "scripts" / "container-engine.sh"

# The `payouts` subcommands; keep in sync with cli/main.py (a test below compares them).
PAYOUTS_COMMANDS = frozenset(
    {
        "migrate",
        "seed",
        "merchant",
        "api",
        "outbox-relay",
        "outbox",
        "processor",
        "webhooks",
        "webhook-sink",
        "healthcheck",
        "topology",
        "up",
        "reconcile",
        "dlq",
        "docs",
        "secrets",
        "ids",
    }
)
SCALABLE_SERVICES = ("outbox-relay", "processor", "webhooks")
APP_SERVICES = ("migrate", "seed", "api", *SCALABLE_SERVICES, "webhook-sink")
# Read by docker-compose.yml itself (interpolation), never passed to a service: which images run,
# and on which host ports (`make compose-smoke` moves them off the local servers' ports).
COMPOSE_VARIABLES = frozenset(
    {
        "PAYOUTS_MYSQL_IMAGE",
        "PAYOUTS_RABBITMQ_IMAGE",
        "PAYOUTS_BASE_IMAGE",
        "PAYOUTS_API_PORT_PUBLISHED",
        "PAYOUTS_RABBITMQ_UI_PORT_PUBLISHED",
        "PAYOUTS_RABBITMQ_UI_HOST",
    }
)
_DEFAULTED_VARIABLE = re.compile(r"\$\{(\w+):-([^}]*)\}")


# --- docker-compose.yml ---------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(entry.split("=", 1) if "=" in entry else (entry, "") for entry in raw)
    return {str(name): str(value) for name, value in raw.items()}


def with_defaults(value: str) -> str:
    """`${VAR:-default}` as compose resolves it when VAR is unset."""
    return _DEFAULTED_VARIABLE.sub(lambda match: match.group(2), value)


def test_compose_runs_the_expected_services() -> None:
    assert set(services()) == {"mysql", "rabbitmq", *APP_SERVICES}


@pytest.mark.parametrize(
    ("name", "variable", "official"),
    [
        ("mysql", "PAYOUTS_MYSQL_IMAGE", "mysql:8.4"),
        ("rabbitmq", "PAYOUTS_RABBITMQ_IMAGE", "rabbitmq:3.13-management"),
    ],
)
def test_images_are_variables_defaulting_to_the_official_ones(
    name: str, variable: str, official: str
) -> None:
    """A user with a registry gets the official image; CI here names a local build."""
    image = services()[name]["image"]
    assert image == f"${{{variable}:-{official}}}"


@pytest.mark.parametrize("name", sorted(services()))
def test_every_service_has_an_image_or_a_build(name: str) -> None:
    assert {"image", "build"} & services()[name].keys()


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_build_this_repository(name: str) -> None:
    build = services()[name]["build"]
    assert build["context"] == "."
    base = build["args"]["BASE_IMAGE"]
    assert base.startswith("${PAYOUTS_BASE_IMAGE:-")
    assert with_defaults(base) == dockerfile_base_image_default()


@pytest.mark.parametrize("name", ["mysql", "rabbitmq", "api"])
def test_stateful_and_serving_services_have_a_healthcheck(name: str) -> None:
    check = services()[name]["healthcheck"]
    assert check["test"][0] in ("CMD", "CMD-SHELL")
    assert len(check["test"]) > 1


def test_api_healthcheck_asks_readiness_on_the_served_port() -> None:
    api = services()["api"]
    probe = " ".join(api["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/api/v1/ready" in probe
    env = environment(api)
    assert env["PAYOUTS_API_HOST"] == "0.0.0.0"  # 127.0.0.1 is unreachable from other containers
    assert env["PAYOUTS_API_PORT"] == "8000"


def cli_option_variables() -> set[str]:
    """The environment variables that options of `payouts` commands read (`envvar=`)."""
    from cli.main import app

    found: set[str] = set()

    def walk(command: Any) -> None:
        for param in command.params:
            if param.envvar:
                found.update([param.envvar] if isinstance(param.envvar, str) else param.envvar)
        for subcommand in getattr(command, "commands", {}).values():
            walk(subcommand)

    walk(typer.main.get_command(app))
    return found


def test_every_payouts_variable_is_a_setting_an_option_or_the_compose_files() -> None:
    """A PAYOUTS_ name nothing reads is a typo that silently changes nothing."""
    used = set(re.findall(r"\bPAYOUTS_[A-Z0-9_]+", COMPOSE.read_text()))
    for service in services().values():
        used |= {name for name in environment(service) if name.startswith("PAYOUTS_")}
    settings = {f"PAYOUTS_{field.upper()}" for field in Settings.model_fields}
    unknown = used - settings - cli_option_variables() - COMPOSE_VARIABLES
    assert used
    assert not unknown, f"neither Settings fields nor option or compose variables: {unknown}"


@pytest.mark.parametrize("name", ["PAYOUTS_DASHBOARD_SESSION_SECRET", "PAYOUTS_OPERATOR_TOKEN"])
def test_the_settings_the_docs_tell_operators_to_set_reach_the_services(name: str) -> None:
    """Set on the host, they never reached a container: the operations pages could not be
    turned on, nor the dashboard with PAYOUTS_ENV=production."""
    for service in APP_SERVICES:
        assert environment(services()[service])[name].startswith(f"${{{name}:-"), service


def test_compose_variables_stay_in_the_compose_file() -> None:
    for name, service in services().items():
        assert not COMPOSE_VARIABLES & set(environment(service)), name


def test_the_seed_and_the_sink_share_the_demo_merchants_credentials() -> None:
    """Chosen (PAYOUTS_DEMO_WEBHOOK_SECRET), the seed stores the secret and the sink verifies
    every signature with it; not chosen (a plain `up`: the seed makes one), the sink reads the
    secret of the merchant whose webhooks go to it once the seed is done. It verified none."""
    assert {"PAYOUTS_DEMO_API_KEY", "PAYOUTS_DEMO_WEBHOOK_SECRET"} <= cli_option_variables()
    seed = environment(services()["seed"])
    assert seed["PAYOUTS_DEMO_API_KEY"] == "${PAYOUTS_DEMO_API_KEY:-}"
    sink_service = services()["webhook-sink"]
    sink = environment(sink_service)
    assert sink["PAYOUTS_WEBHOOK_SINK_SECRET"] == seed["PAYOUTS_DEMO_WEBHOOK_SECRET"]
    assert "PAYOUTS_WEBHOOK_SINK_SECRET" in cli_option_variables()
    seed_command = services()["seed"]["command"]
    webhook_url = seed_command[seed_command.index("--webhook-url") + 1]
    assert f"--secret-of-merchant-at={webhook_url}" in sink_service["command"]
    assert sink_service["depends_on"] == {"seed": {"condition": "service_completed_successfully"}}


@pytest.mark.parametrize("name", APP_SERVICES)
def test_configuration_builds_valid_settings(name: str) -> None:
    env = {
        key.removeprefix("PAYOUTS_").lower(): with_defaults(value)
        for key, value in environment(services()[name]).items()
        if key.startswith("PAYOUTS_")
    }
    settings = Settings.model_validate(env)
    assert settings.database_url.startswith("mysql+asyncmy://")


@pytest.mark.parametrize("name", APP_SERVICES)
def test_commands_are_payouts_subcommands(name: str) -> None:
    command = services()[name]["command"]
    assert isinstance(command, list), "exec form: no shell between compose and payouts"
    assert command[0] in PAYOUTS_COMMANDS


def test_the_command_list_matches_cli_main() -> None:
    from cli.main import app

    registered = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert registered == PAYOUTS_COMMANDS


def test_each_service_command_runs_once() -> None:
    commands = [services()[name]["command"][0] for name in APP_SERVICES]
    assert sorted(commands) == sorted(set(commands))


def test_depends_on_waits_for_health_and_for_the_migration() -> None:
    all_services = services()
    for name in APP_SERVICES:
        depends = all_services[name].get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: long form, with conditions"
        for dependency, condition in depends.items():
            expected = (
                "service_completed_successfully"
                if dependency in ("migrate", "seed")
                else "service_healthy"
            )
            assert condition == {"condition": expected}, f"{name} -> {dependency}"
    assert set(all_services["migrate"]["depends_on"]) == {"mysql"}
    for name in ("api", *SCALABLE_SERVICES):
        assert {"mysql", "rabbitmq", "migrate"} <= set(all_services[name]["depends_on"]), name


def test_consumers_are_scalable_and_only_api_and_ui_publish_ports() -> None:
    all_services = services()
    assert not [name for name, service in all_services.items() if "container_name" in service]
    published = {
        name: service["ports"] for name, service in all_services.items() if "ports" in service
    }
    assert published == {
        "api": ["${PAYOUTS_API_PORT_PUBLISHED:-8000}:8000"],
        # Its administrator's password is in the repository: this machine only, by default.
        "rabbitmq": [
            "${PAYOUTS_RABBITMQ_UI_HOST:-127.0.0.1}:${PAYOUTS_RABBITMQ_UI_PORT_PUBLISHED:-15672}:15672"
        ],
    }


def test_a_plain_up_runs_the_receiver_the_demo_merchants_webhooks_go_to() -> None:
    """The sink was behind a profile: after the README's `docker compose up --build -d` every
    demo webhook went to a host that did not resolve, and was parked."""
    seed_command = services()["seed"]["command"]
    default_url = re.search(r":-([^}]+)\}", seed_command[seed_command.index("--webhook-url") + 1])
    assert default_url is not None
    receiver = services()[str(urlsplit(default_url.group(1)).hostname)]
    assert "profiles" not in receiver
    # Nothing waits for it: it waits for the seed.
    assert "webhook-sink" not in str([s.get("depends_on") for s in services().values()])


def test_rabbitmq_keeps_its_node_name_and_mounts_its_configuration() -> None:
    rabbitmq = services()["rabbitmq"]
    assert rabbitmq["hostname"]  # quorum queue data is tied to rabbit@<hostname>
    mounts = {
        target: source
        for source, target, *_ in (volume.split(":") for volume in rabbitmq["volumes"])
    }
    for target in ("rabbitmq.conf", "definitions.json", "enabled_plugins"):
        source = mounts[f"/etc/rabbitmq/{target}"]
        assert (ROOT / source).is_file(), source


def test_services_connect_as_the_broker_user_the_definitions_create() -> None:
    amqp = urlsplit(with_defaults(environment(services()["processor"])["PAYOUTS_AMQP_URL"]))
    definitions = json.loads(DEFINITIONS.read_text())
    users = {user["name"]: user for user in definitions["users"]}
    assert amqp.hostname == "rabbitmq"
    assert amqp.path.lstrip("/") in {vhost["name"] for vhost in definitions["vhosts"]}
    assert amqp.username in users
    expected = password_hash(BrokerUser(amqp.username or "", amqp.password or ""))
    assert users[amqp.username]["password_hash"] == expected


def test_services_connect_as_the_database_user_mysql_creates() -> None:
    database = urlsplit(with_defaults(environment(services()["api"])["PAYOUTS_DATABASE_URL"]))
    mysql = {key: with_defaults(value) for key, value in environment(services()["mysql"]).items()}
    assert database.hostname == "mysql"
    assert database.username == mysql["MYSQL_USER"]
    assert database.password == mysql["MYSQL_PASSWORD"]
    assert database.path.lstrip("/") == mysql["MYSQL_DATABASE"]


def test_webhook_ladder_matches_the_retry_queues_rabbitmq_loads() -> None:
    delays = with_defaults(environment(services()["webhooks"])["PAYOUTS_WEBHOOK_RETRY_DELAYS"])
    definitions = json.loads(DEFINITIONS.read_text())
    retry_queues = [
        queue["name"]
        for queue in definitions["queues"]
        if queue["name"].startswith("webhooks.payout-events.retry")
    ]
    assert len(Settings(webhook_retry_delays=delays).webhook_retry_ladder) == len(retry_queues)


def test_the_definitions_declare_each_queue_and_binding_once() -> None:
    """Both webhook lanes park into one parking lot: it was declared, and bound, twice."""
    definitions = json.loads(DEFINITIONS.read_text())
    queues = [queue["name"] for queue in definitions["queues"]]
    bindings = [
        (binding["source"], binding["destination"], binding["routing_key"])
        for binding in definitions["bindings"]
    ]
    assert len(set(queues)) == len(queues)
    assert len(set(bindings)) == len(bindings)


# --- Dockerfile -----------------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [rest for found, rest in self.instructions if found == keyword]


def dockerfile_stages() -> list[Stage]:
    """FROM stages with their instructions; global ARG defaults expanded in FROM lines."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())  # join continued lines
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in (raw.strip() for raw in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            global_args[name] = default
        elif keyword == "FROM":
            image, *alias = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda match: global_args[match.group(1)], image)
            stages.append(Stage(base, alias[-1] if alias else None))
        else:
            stages[-1].instructions.append((keyword, rest))
    return stages


def final_stage() -> Stage:
    return dockerfile_stages()[-1]


def dockerfile_base_image_default() -> str:
    [default] = re.findall(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    return str(default)


def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    assert final_stage().base == "python:3.11-slim"
    assert {stage.base for stage in stages} == {"python:3.11-slim"}  # both from BASE_IMAGE


def test_dockerfile_needs_no_registry_beyond_its_base_image() -> None:
    """A `# syntax=` line makes BuildKit pull a frontend image; with no registry (CI here) the
    build would fail before its first step."""
    assert not re.search(r"^#\s*syntax\s*=", DOCKERFILE.read_text(), re.MULTILINE | re.IGNORECASE)


def test_final_stage_runs_as_a_non_root_user() -> None:
    users = final_stage().all("USER")
    assert users, "no USER: the services would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_final_stage_has_no_build_tools_and_takes_the_venv_from_the_builder() -> None:
    stage = final_stage()
    runs = " ".join(stage.all("RUN"))
    for tool in ("apt-get install", "build-essential", "gcc", "pip install"):
        assert tool not in runs
    builder = dockerfile_stages()[0].name
    assert any(f"--from={builder} /opt/venv" in copy for copy in stage.all("COPY"))
    assert "PATH=/opt/venv/bin" in " ".join(stage.all("ENV"))


def test_entrypoint_is_the_payouts_console_script() -> None:
    [entrypoint] = final_stage().all("ENTRYPOINT")
    assert json.loads(entrypoint) == ["payouts"]
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    assert scripts["payouts"] == "cli.main:app"


def test_dockerignore_lets_every_package_into_the_build_context() -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allow-list keeps .env files and the venv out of the image"
    pyproject = tomllib.loads(PYPROJECT.read_text())
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert f"!{pattern.rstrip('*')}" in lines, pattern
    assert "!pyproject.toml" in lines
    assert "!constraints.txt" in lines
    readme = pyproject["project"].get("readme")  # the wheel build reads it when declared
    assert readme is None or f"!{readme}" in lines


def pinned_versions() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def declared_requirements() -> list[Requirement]:
    pyproject = tomllib.loads(PYPROJECT.read_text())
    project = pyproject["project"]
    extras = project["optional-dependencies"].values()
    requirements = [Requirement(line) for line in project["dependencies"]]
    requirements += [Requirement(line) for lines in extras for line in lines]
    # The build backend, which pip fetches for `pip install -e .` and `pip wheel .`, and pip.
    requirements += [Requirement(line) for line in pyproject["build-system"]["requires"]]
    requirements.append(Requirement("pip"))
    return [req for req in requirements if req.marker is None or req.marker.evaluate()]


@pytest.mark.parametrize("requirement", declared_requirements(), ids=str)
def test_each_dependency_is_pinned_within_its_declared_range(requirement: Requirement) -> None:
    """Without a pin, a fresh machine takes whatever PyPI released last: CI would test other
    versions than the ones that passed. A pin outside pyproject.toml's range would fail the
    install."""
    pinned = pinned_versions().get(canonicalize_name(requirement.name))
    assert pinned is not None, f"{requirement.name} has no pin in constraints.txt"
    assert requirement.specifier.contains(pinned, prereleases=True), (requirement, pinned)


def test_every_install_takes_the_pinned_versions() -> None:
    """As PIP_CONSTRAINT, which reaches pip's isolated build environments too (the build
    backend was fetched unpinned: diff review)."""
    makefile = MAKEFILE.read_text()
    assert re.search(r"^PINNED := PIP_CONSTRAINT=\$\(CURDIR\)/constraints\.txt$", makefile, re.M)
    installs = re.findall(r"^\t.*\$\(BIN\)/pip install\b.*$", makefile, re.M)
    assert len(installs) == 3, installs  # pip itself, make install, make bench
    assert all(line.startswith("\t$(PINNED) ") for line in installs), installs
    builder = dockerfile_stages()[0]
    assert any("constraints.txt" in copy for copy in builder.all("COPY"))
    assert "PIP_CONSTRAINT=/src/constraints.txt" in builder.all("ENV")
    assert builder.all("WORKDIR") == ["/src"]


def test_runtime_dependencies_can_log_in_to_mysql_8() -> None:
    """MySQL 8 users authenticate with caching_sha2_password; over plain TCP asyncmy needs
    `cryptography` for the RSA exchange after every server restart."""
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    assert any(re.match(r"cryptography\b", dependency) for dependency in dependencies)


# --- deploy/images: the local builds for a machine without a registry ----------------------------


def local_dockerfiles() -> list[Path]:
    return sorted(LOCAL_IMAGES.glob("*/Dockerfile"))


def test_local_images_are_the_three_stand_ins() -> None:
    assert {path.parent.name for path in local_dockerfiles()} == {"mariadb", "rabbitmq", "python"}


@pytest.mark.parametrize("path", local_dockerfiles(), ids=lambda path: path.parent.name)
def test_local_images_build_from_the_local_base_only(path: Path) -> None:
    """FROM ${BASE_IMAGE}, which has no default: a forgotten build argument fails at once
    instead of pulling some image from a registry."""
    text = path.read_text()
    assert re.findall(r"^FROM (\S+)", text, re.MULTILINE) == ["${BASE_IMAGE}"]
    assert re.search(r"^ARG BASE_IMAGE$", text, re.MULTILINE)


def test_local_builds_are_never_tagged_as_the_official_images() -> None:
    """A MariaDB build tagged mysql:... would pass for MySQL in every log and report."""
    script = CONTAINER_ENGINE.read_text()
    [namespace] = re.findall(r"^REPOSITORY=(\S+)", script, re.MULTILINE)
    assert namespace not in {"mysql", "mariadb", "rabbitmq", "python", "debian", "library"}
    tags = re.findall(r'\btag="([^"]+)"', script)
    assert tags
    assert all(tag.startswith("$REPOSITORY/") for tag in tags), tags


@pytest.mark.parametrize(
    "path",
    [
        CONTAINER_ENGINE,
        LOCAL_IMAGES / "debian-base" / "build.sh",
        LOCAL_IMAGES / "mariadb" / "entrypoint.sh",
        LOCAL_IMAGES / "rabbitmq" / "entrypoint.sh",
    ],
    ids=lambda path: str(path.relative_to(ROOT)),
)
def test_scripts_and_entrypoints_are_executable(path: Path) -> None:
    """COPY keeps the file's mode: an entrypoint without its x bit fails the container."""
    assert os.access(path, os.X_OK)


def test_the_mariadb_stand_in_takes_the_variables_compose_gives_mysql() -> None:
    entrypoint = (LOCAL_IMAGES / "mariadb" / "entrypoint.sh").read_text()
    for variable in environment(services()["mysql"]):
        assert variable.startswith("MYSQL_")
        assert f"setting {variable.removeprefix('MYSQL_')}" in entrypoint, variable


def test_a_stop_waits_for_the_longest_drain_the_settings_allow() -> None:
    """PAYOUTS_SHUTDOWN_DRAIN_SECONDS takes up to 60 s, then the API's graceful stop 15 s: a
    30 s grace killed a drain set above about 15 s partway through."""
    grace = services()["api"]["stop_grace_period"]  # every app service's, from the anchor
    assert grace.endswith("s")
    drain = Settings.model_fields["shutdown_drain_seconds"].metadata
    longest_drain = max(getattr(limit, "le", 0) for limit in drain)
    assert int(grace.removesuffix("s")) > longest_drain + CONSUMER_GRACEFUL_TIMEOUT_SECONDS
