"""deploy/: the Kubernetes manifests validate against Kubernetes' schemas, and what they tell the containers works.

No cluster and no Docker daemon run here, so:
- every manifest, as each kustomization renders it, validates with kubernetes-validate (strict: an unknown or
  misspelt field fails) for the oldest and the newest Kubernetes version the package ships schemas for;
- the containers' args parse with modelserve's own parsers, and the ConfigMaps' files with its readers;
- a real ``modelserve serve`` and a real ``modelserve gateway``, started with the Deployments' args and the
  ConfigMaps' files (paths under the mounts rewritten to local folders, ports OS-assigned), answer every
  probe path and metrics path the manifests name, on the port they name;
- the Dockerfiles copy only what exists and is not .dockerignored, and their ENTRYPOINT/CMD parse.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import kubernetes_validate
import pytest
import yaml
from deploy_manifests import (
    DOCKER,
    KUBERNETES,
    OVERLAYS,
    REPO,
    Manifest,
    container,
    container_port,
    docker_ignored,
    dockerfile,
    dockerignore_patterns,
    files_used_by_kustomizations,
    find,
    flag,
    last,
    load_documents,
    localize,
    quantity_bytes,
    render,
)
from kubernetes_validate.utils import all_versions

from modelserve.cli import build_parser, parse_serve_options
from modelserve.config.text_files import (
    parse_batching_parameters,
    parse_model_server_config,
    read_monitoring_config,
)
from modelserve.frontends.rest.http_server import FLUSH_SECONDS
from modelserve.gateway import load_handler
from modelserve.gateway.command import options_from_args
from modelserve.gateway.gunicorn_app import stop_seconds

# The gateway tests' harness: a real `modelserve gateway` subprocess with a ready file.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))
from gateway_harness import GatewayProcess, pixels

SERVER, GATEWAY = "modelserve-server", "modelserve-gateway"
KUBERNETES_VERSIONS = (all_versions()[0], all_versions()[-1])


@pytest.fixture(scope="module")
def base() -> list[Manifest]:
    return render(KUBERNETES / "base")


@pytest.fixture(scope="module")
def gpu() -> list[Manifest]:
    return render(KUBERNETES / "gpu")


def config_files(manifests: list[Manifest]) -> dict[str, str]:
    return dict(find(manifests, "ConfigMap", "modelserve-server-config")["data"])


def args_of(manifests: list[Manifest], deployment: str) -> list[str]:
    return list(container(find(manifests, "Deployment", deployment))["args"])


# --- schemas ------------------------------------------------------------------------------------------------


def standalone_manifests() -> list[Path]:
    """YAML files no kustomization applies (examples such as the S3 Secret): validated on their own."""
    used = files_used_by_kustomizations()
    return sorted(p for p in KUBERNETES.rglob("*.yaml") if p.resolve() not in used)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schemas(version: str) -> None:
    validated: list[str] = []
    for overlay in OVERLAYS:
        for manifest in render(KUBERNETES / overlay):
            kubernetes_validate.validate(manifest, version, strict=True)
            validated.append(f"{overlay}:{manifest['kind']}")
    for path in standalone_manifests():
        for manifest in load_documents(path):
            kubernetes_validate.validate(manifest, version, strict=True)
            validated.append(f"{path.name}:{manifest['kind']}")
    expected_base = ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"]
    assert {f"base:{kind}" for kind in expected_base} <= set(validated)
    assert "s3-credentials.example.yaml:Secret" in validated


def test_strict_validation_rejects_a_misspelt_field(base: list[Manifest]) -> None:
    deployment = copy.deepcopy(find(base, "Deployment", SERVER))
    container(deployment)["readinesProbe"] = container(deployment).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def by_kind_and_name(manifests: Iterable[Manifest]) -> list[Manifest]:
    return sorted(manifests, key=lambda m: (m["kind"], m["metadata"]["name"]))


def test_the_python_rendering_is_what_kubectl_kustomize_prints() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the overlays are validated as rendered in Python only")
    for overlay in OVERLAYS:
        printed = subprocess.run(
            [kubectl, "kustomize", str(KUBERNETES / overlay)], capture_output=True, text=True, check=True
        ).stdout
        assert by_kind_and_name(yaml.safe_load_all(printed)) == by_kind_and_name(render(KUBERNETES / overlay))


def test_the_gpu_overlay_puts_the_model_server_on_one_gpu(base: list[Manifest], gpu: list[Manifest]) -> None:
    server = container(find(gpu, "Deployment", SERVER))
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert server["image"].endswith("-gpu")
    pod = find(gpu, "Deployment", SERVER)["spec"]["template"]["spec"]
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["nodeSelector"]
    assert "nvidia.com/gpu" not in container(find(base, "Deployment", SERVER))["resources"]["limits"]
    # Nothing else changes: the gateway and every other manifest are the base's.
    others = [m for m in gpu if m["kind"] != "Deployment" or m["metadata"]["name"] != SERVER]
    assert others == [m for m in base if m["kind"] != "Deployment" or m["metadata"]["name"] != SERVER]


# --- what the manifests tell the containers ---------------------------------------------------------------


def test_the_model_server_args_are_modelserve_serve_flags(base: list[Manifest]) -> None:
    args = args_of(base, SERVER)
    assert args[0] == "serve"
    options = parse_serve_options(args[1:])
    # An unknown flag would only be logged and ignored at startup: here it fails.
    assert options.extra_flags_ignored == ()
    deployment = find(base, "Deployment", SERVER)
    assert options.port == container_port(deployment, "grpc")
    assert options.rest_api_port == container_port(deployment, "http")
    assert options.enable_batching


def test_the_gateway_args_are_modelserve_gateway_flags(base: list[Manifest]) -> None:
    args = args_of(base, GATEWAY)
    options = options_from_args(build_parser().parse_args(args))  # argparse exits on an unknown flag
    assert options.bind == f"0.0.0.0:{container_port(find(base, 'Deployment', GATEWAY), 'http')}"
    upstream = urlsplit(options.model_server)
    service = find(base, "Service", SERVER)
    assert upstream.hostname == service["metadata"]["name"]
    scheme_port = {"http": "http", "grpc": "grpc"}[upstream.scheme]
    assert upstream.port == next(p["port"] for p in service["spec"]["ports"] if p["name"] == scheme_port)
    handler_mount = next(
        m for m in container(find(base, "Deployment", GATEWAY))["volumeMounts"] if m["name"] == "handler"
    )
    assert options.handler.startswith(handler_mount["mountPath"] + "/")


def test_the_config_files_parse_with_modelserve_readers(base: list[Manifest], tmp_path: Path) -> None:
    files = config_files(base)
    serving = parse_model_server_config(files["models.config"])
    assert [m.base_path.split("://")[0] for m in serving.models] == ["s3"]
    batching = parse_batching_parameters(files["batching.config"])
    assert batching.num_batch_threads == int(
        container(find(base, "Deployment", SERVER))["resources"]["requests"]["cpu"]
    )
    (tmp_path / "monitoring.config").write_text(files["monitoring.config"])
    monitoring = read_monitoring_config(tmp_path / "monitoring.config")
    annotations = find(base, "Deployment", SERVER)["spec"]["template"]["metadata"]["annotations"]
    assert monitoring.prometheus_enabled
    assert monitoring.prometheus_path == annotations["prometheus.io/path"]
    assert annotations["prometheus.io/port"] == flag(args_of(base, SERVER), "--rest_api_port")


def test_the_gateway_handler_calls_a_model_the_server_serves(base: list[Manifest], tmp_path: Path) -> None:
    path = tmp_path / "handler.py"
    path.write_text(find(base, "ConfigMap", "modelserve-gateway-handler")["data"]["handler.py"])
    served = [m.name for m in parse_model_server_config(config_files(base)["models.config"]).models]
    assert load_handler(str(path)).model in served


@pytest.mark.parametrize("component", [SERVER, GATEWAY])
def test_services_send_traffic_to_named_container_ports(base: list[Manifest], component: str) -> None:
    service = find(base, "Service", component)
    selector = service["spec"]["selector"]
    deployments = [
        d
        for d in base
        if d["kind"] == "Deployment"
        and selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert [d["metadata"]["name"] for d in deployments] == [component]
    names = {p["name"]: p["containerPort"] for p in container(deployments[0])["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in names, port
        assert port["name"] == port["targetPort"]
    if component == SERVER:  # TF Serving's well-known ports, unchanged inside the cluster
        assert {p["port"]: names[p["targetPort"]] for p in service["spec"]["ports"]} == {
            8500: 8500,
            8501: 8501,
        }


def test_disruption_budgets_and_the_autoscaler_select_the_deployments(base: list[Manifest]) -> None:
    for component in (SERVER, GATEWAY):
        budget = find(base, "PodDisruptionBudget", component)
        labels = find(base, "Deployment", component)["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    autoscaler = find(base, "HorizontalPodAutoscaler", GATEWAY)
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": GATEWAY,
    }
    assert autoscaler["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    gateway = find(base, "Deployment", GATEWAY)
    assert "replicas" not in gateway["spec"], "the autoscaler owns the gateway's replica count"
    assert "cpu" in container(gateway)["resources"]["requests"], "CPU utilisation is relative to the request"


_UNLOAD_MARGIN_SECONDS = 5.0  # the model server's unload after its drain, and the kubelet's own delays


def longest_stop(component: str, args: list[str]) -> float:
    """Seconds from SIGTERM to exit at worst, as each program bounds its stop."""
    if component == SERVER:  # the drain, then the cancelled requests' 503s are flushed
        return float(flag(args, "--drain_timeout_seconds")) + FLUSH_SECONDS
    return stop_seconds(options_from_args(build_parser().parse_args(args)))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_grace_period_covers_the_endpoint_delay_and_the_whole_stop(overlay: str) -> None:
    for deployment in (m for m in render(KUBERNETES / overlay) if m["kind"] == "Deployment"):
        component = deployment["metadata"]["name"]
        pre_stop = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        needed = float(pre_stop[1]) + longest_stop(component, container(deployment)["args"])
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= needed + _UNLOAD_MARGIN_SECONDS, (component, grace, needed)


_DISK_MARGIN = 512 * 2**20  # logs and the writable layer, beside the emptyDir volumes


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ephemeral_storage_limit_holds_every_emptydir(overlay: str) -> None:
    """emptyDir volumes count toward the pod's ephemeral-storage (on disk) or its memory (medium Memory):
    a limit below their sizes gets the pod evicted once they fill."""
    for deployment in (m for m in render(KUBERNETES / overlay) if m["kind"] == "Deployment"):
        name = deployment["metadata"]["name"]
        empty_dirs = [
            v["emptyDir"] for v in deployment["spec"]["template"]["spec"]["volumes"] if "emptyDir" in v
        ]
        assert all("sizeLimit" in e for e in empty_dirs), f"{name}: an emptyDir without sizeLimit"
        on_disk = sum(quantity_bytes(e["sizeLimit"]) for e in empty_dirs if e.get("medium") != "Memory")
        in_memory = sum(quantity_bytes(e["sizeLimit"]) for e in empty_dirs if e.get("medium") == "Memory")
        limits = container(deployment)["resources"]["limits"]
        if on_disk:
            assert "ephemeral-storage" in limits, f"{name}: emptyDirs on disk but no ephemeral-storage limit"
            assert quantity_bytes(limits["ephemeral-storage"]) >= on_disk + _DISK_MARGIN, name
        if in_memory:
            assert quantity_bytes(limits["memory"]) > in_memory, name


# --- a real model server and gateway answer what the manifests probe -----------------------------------------


def http_paths(deployment: Manifest) -> list[tuple[str, int]]:
    """(path, container port) of every HTTP probe of the container, then of the Prometheus annotations."""
    spec = container(deployment)
    probes = [spec[name]["httpGet"] for name in ("startupProbe", "livenessProbe", "readinessProbe")]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    scraped = (annotations["prometheus.io/path"], int(annotations["prometheus.io/port"]))
    return [(p["path"], container_port(deployment, p["port"])) for p in probes] + [scraped]


def unanswered(base_url: str, paths: list[tuple[str, int]]) -> dict[str, str]:
    """The paths that do not answer 200 (with their answer); the last one must be a Prometheus scrape body."""
    failed = {}
    for index, (path, _) in enumerate(paths):
        response = httpx.get(f"{base_url}{path}", trust_env=False)
        if response.status_code != 200:
            failed[path] = f"{response.status_code} {response.text[:200]}"
        elif index == len(paths) - 1 and "# TYPE " not in response.text:
            failed[path] = f"not a Prometheus exposition: {response.text[:200]}"
    return failed


def local_mounts(deployment: Manifest, root: Path) -> dict[str, Path]:
    """A local folder for every volume mount of the container."""
    mounts = {}
    for mount in container(deployment)["volumeMounts"]:
        folder = root / mount["name"]
        folder.mkdir()
        mounts[mount["mountPath"]] = folder
    return mounts


@pytest.fixture(scope="module")
def server(start_module_server: Any, digits_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``modelserve serve`` with the Deployment's args and the ConfigMap's files; the model from a local folder."""
    manifests = render(KUBERNETES / "base")
    deployment = find(manifests, "Deployment", SERVER)
    mounts = local_mounts(deployment, tmp_path_factory.mktemp("server-volumes"))
    config_mount = next(
        m["mountPath"] for m in container(deployment)["volumeMounts"] if m["name"] == "config"
    )
    for name, text in config_files(manifests).items():
        for model in parse_model_server_config(text).models if name == "models.config" else ():
            text = text.replace(f'"{model.base_path}"', f'"{digits_repo}"')
        (mounts[config_mount] / name).write_text(text)
    args = localize(args_of(manifests, SERVER), mounts)
    return start_module_server(*args[1:])


def test_the_model_server_answers_its_probes_and_metrics_paths(server: Any, base: list[Manifest]) -> None:
    deployment = find(base, "Deployment", SERVER)
    paths = http_paths(deployment)
    rest_port = int(flag(container(deployment)["args"], "--rest_api_port"))
    assert {port for _, port in paths} == {rest_port}, "every probe and the scrape are on the REST port"
    assert unanswered(server.url, paths) == {}, server.log()
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert httpx.get(f"{server.url}{path}", trust_env=False).status_code == 200, path


@pytest.fixture
def gateway(server: Any, base: list[Manifest], tmp_path: Path) -> Iterator[GatewayProcess]:
    """``modelserve gateway`` with the Deployment's args, the handler laid out like a mounted ConfigMap
    (kubelet's ``..data`` symlinks), and the real model server in place of its Service."""
    deployment = find(base, "Deployment", GATEWAY)
    mounts = local_mounts(deployment, tmp_path)
    handler_mount = next(
        m["mountPath"] for m in container(deployment)["volumeMounts"] if m["name"] == "handler"
    )
    folder = mounts[handler_mount]
    (folder / "..2025_01_01_00_00_00.000000001").mkdir()
    (folder / "..data").symlink_to("..2025_01_01_00_00_00.000000001")
    for name, text in find(base, "ConfigMap", "modelserve-gateway-handler")["data"].items():
        (folder / "..data" / name).write_text(text)
        (folder / name).symlink_to(f"..data/{name}")
    args = [
        f"--model-server={server.url}" if arg.startswith("--model-server=") else arg
        for arg in localize(args_of(base, GATEWAY), mounts)
    ]
    process = GatewayProcess(args[1:], tmp_path)  # it binds 127.0.0.1:0 in place of --bind
    process.start()
    yield process
    assert process.stop() == 0, process.log()


def test_the_gateway_serves_the_configmap_handler_and_answers_its_probes(
    gateway: GatewayProcess, base: list[Manifest]
) -> None:
    answer = httpx.post(f"{gateway.url}/", json={"pixels": pixels(7, rows=2).tolist()}, trust_env=False)
    assert answer.status_code == 200, (answer.text, gateway.log())
    assert len(answer.json()["classes"]) == 2
    deployment = find(base, "Deployment", GATEWAY)
    paths = http_paths(deployment)
    bound_port = int(flag(container(deployment)["args"], "--bind").rsplit(":", 1)[1])
    assert {port for _, port in paths} == {bound_port}, "every probe and the scrape are on the bound port"
    assert unanswered(gateway.url, paths) == {}, gateway.log()


# --- container images --------------------------------------------------------------------------------------


@pytest.mark.parametrize("image", ["server", "gateway"])
def test_the_dockerfile_copies_what_the_build_context_holds(image: str) -> None:
    instructions = dockerfile(DOCKER / f"Dockerfile.{image}")
    ignore = dockerignore_patterns()
    copied = 0
    for copy_instruction in (i for i in instructions if i.keyword == "COPY"):
        words = copy_instruction.words()
        if any(word.startswith("--from=") for word in words):
            continue
        for source in [w for w in words if not w.startswith("--")][:-1]:
            assert (REPO / source).exists(), source
            assert not docker_ignored(source, ignore), f"{source} is .dockerignored"
            copied += 1
    assert copied >= 3  # pyproject.toml, README.md, src
    assert docker_ignored(".venv/bin/python", ignore) and docker_ignored(
        "src/modelserve/__pycache__/x.pyc", ignore
    )
    assert not docker_ignored("src/modelserve/cli.py", ignore)
    assert [i.words()[0] for i in instructions if i.keyword == "USER"][-1].split(":")[0] != "0"


def test_the_server_image_runs_modelserve_serve() -> None:
    instructions = dockerfile(DOCKER / "Dockerfile.server")
    assert last(instructions, "ENTRYPOINT").exec_form() == ["modelserve"]
    command = last(instructions, "CMD").exec_form()
    assert command[0] == "serve"
    options = parse_serve_options(command[1:])
    assert options.extra_flags_ignored == ()
    assert sorted(int(p) for p in last(instructions, "EXPOSE").words()) == sorted(
        [options.port, options.rest_api_port]
    )
    assert f":{options.rest_api_port}/healthz" in last(instructions, "HEALTHCHECK").arguments


def test_the_gateway_image_runs_modelserve_gateway(base: list[Manifest]) -> None:
    instructions = dockerfile(DOCKER / "Dockerfile.gateway")
    assert last(instructions, "ENTRYPOINT").exec_form() == ["modelserve"]
    options = options_from_args(build_parser().parse_args(last(instructions, "CMD").exec_form()))
    port = options.bind.rsplit(":", 1)[1]
    assert last(instructions, "EXPOSE").words() == [port]
    assert f":{port}/healthz" in last(instructions, "HEALTHCHECK").arguments
    # The image's default handler path is where the Deployment mounts the handler ConfigMap.
    assert options.handler == args_of(base, GATEWAY)[1]
