"""Reading deploy/: Kubernetes manifests, kustomizations rendered in Python, and Dockerfile instructions.

No cluster and no Docker daemon run here. A kustomization is rendered the way kustomize does for the subset
our kustomizations use (``resources`` and RFC 6902 ``patches`` with a target); any other key is refused, so a
kustomization that outgrows this renderer fails loudly instead of being validated half-rendered. When kubectl
is installed, a test compares this rendering with ``kubectl kustomize``.
"""

from __future__ import annotations

import fnmatch
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonpatch
import yaml

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "deploy" / "kubernetes"
DOCKER = REPO / "deploy" / "docker"
OVERLAYS = ("base", "gpu")

Manifest = dict[str, Any]
_RENDERED_KEYS = {"apiVersion", "kind", "resources", "patches"}


def load_documents(path: Path) -> list[Manifest]:
    """Every non-empty YAML document of a file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomization(directory: Path) -> Manifest:
    document: Manifest = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return document


def render(directory: Path) -> list[Manifest]:
    """The manifests ``kubectl kustomize directory`` would print (for resources + RFC 6902 patches)."""
    spec = kustomization(directory)
    unsupported = set(spec) - _RENDERED_KEYS
    assert not unsupported, f"{directory}/kustomization.yaml: teach deploy_manifests.render {unsupported}"
    manifests: list[Manifest] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        manifests.extend(render(path) if path.is_dir() else load_documents(path))
    for patch in spec.get("patches", []):
        operations = yaml.safe_load((directory / patch["path"]).read_text())
        targets = [m for m in manifests if _is_target(m, patch["target"])]
        assert len(targets) == 1, f"patch {patch['path']} matches {len(targets)} manifests"
        index = manifests.index(targets[0])
        manifests[index] = jsonpatch.apply_patch(targets[0], operations)
    return manifests


def _is_target(manifest: Manifest, target: dict[str, str]) -> bool:
    group, _, version = manifest["apiVersion"].rpartition("/")
    actual = {
        "group": group,
        "version": version,
        "kind": manifest["kind"],
        "name": manifest["metadata"]["name"],
    }
    return all(actual[key] == value for key, value in target.items())


def files_used_by_kustomizations() -> set[Path]:
    """Every file a kustomization under deploy/kubernetes names (itself, its resources and patches)."""
    used: set[Path] = set()
    for file in KUBERNETES.rglob("kustomization.yaml"):
        spec = yaml.safe_load(file.read_text())
        used.add(file)
        used.update((file.parent / entry).resolve() for entry in spec.get("resources", []))
        used.update((file.parent / patch["path"]).resolve() for patch in spec.get("patches", []))
    return used


def find(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def container(deployment: Manifest) -> Manifest:
    """The Deployment's only container (modelserve runs one process per pod)."""
    containers: list[Manifest] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def container_port(deployment: Manifest, port: int | str) -> int:
    """A probe's or a Service's port (a number, or a name of the container's ports) as a number."""
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in container(deployment)["ports"] if p["name"] == port]
    assert len(numbers) == 1, f"no container port named {port!r}"
    return int(numbers[0])


_QUANTITY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}


def quantity_bytes(quantity: str | int) -> int:
    """A Kubernetes quantity of bytes (``4Gi``, ``256Mi``, ``500M``, ``1024``) as a number of bytes."""
    text = str(quantity)
    for unit, factor in _QUANTITY_UNITS.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def flag(args: list[str], name: str) -> str:
    """The value of ``--name=value`` among a container's args."""
    values = [arg.split("=", 1)[1] for arg in args if arg.startswith(f"{name}=")]
    assert len(values) == 1, f"{name}: {values}"
    return values[0]


def localize(args: list[str], mounts: dict[str, Path]) -> list[str]:
    """The args with every path under a container mount rewritten to the local folder standing for it."""
    local = []
    for arg in args:
        # --flag=PATH, or a positional PATH (the gateway's handler).
        name, equals, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        for mount_path, folder in mounts.items():
            if value == mount_path or value.startswith(mount_path + "/"):
                value = str(folder) + value[len(mount_path) :]
                break
        local.append(name + equals + value)
    return local


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        """``["a", "b"]`` arguments (ENTRYPOINT, CMD); a shell-form string is a test failure."""
        value = json.loads(self.arguments)
        assert isinstance(value, list), f"{self.keyword} must use the exec (JSON) form"
        return [str(item) for item in value]

    def words(self) -> list[str]:
        return shlex.split(self.arguments)


def dockerfile(path: Path) -> list[Instruction]:
    instructions: list[Instruction] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def last(instructions: list[Instruction], keyword: str) -> Instruction:
    """The instruction that counts (the final stage's last one)."""
    return [i for i in instructions if i.keyword == keyword][-1]


def docker_ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context: the last pattern that matches the path
    or one of its parent folders wins; ``!`` re-includes."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/").replace("**/", "*/")
        if any(fnmatch.fnmatchcase(candidate, glob) for candidate in candidates):
            ignored = not negated
    return ignored


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
