"""Static checks of what a user applies: deploy/, compose.yaml and the Dockerfile.

No cluster and no container runtime here. Manifests are parsed; RBAC is compared with the
least-privilege sets the code needs (publishers/publisher.py, publishers/membership.py,
subscribers/subscriber.py, subscribers/profiles.py, engine/identity.py); Deployments are
checked for probes, security context, resources and a Secret mounted as a file; the NATS
configs in deploy/nats must be exactly what engine.natsconfig renders now.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine import jetstream, natsconfig
from engine.core import subjects
from engine.local import controlplane, images

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "kustomize" / "base"
OVERLAY = DEPLOY / "kustomize" / "overlays" / "example-cluster-1"
CHART = DEPLOY / "helm" / "mcsync"
TEMPLATES = CHART / "templates"
IMAGE = "mcsync:0.1.0"

Obj = dict[str, Any]
RuleKey = tuple[str, str, str | None]  # api group, resource, resource name (None: any)

READ = frozenset({"get", "list", "watch"})
OWN = frozenset({"get", "list", "watch", "create", "patch", "delete"})
PATCH = frozenset({"patch"})

EXPECTED_RULES: dict[tuple[str, str], dict[RuleKey, frozenset[str]]] = {
    ("ClusterRole", "publisher"): {
        ("multicluster.x-k8s.io", "serviceexports", None): READ,
        ("", "services", None): READ,
        ("discovery.k8s.io", "endpointslices", None): READ,
        ("about.k8s.io", "clusterproperties", None): READ,
    },
    ("ClusterRole", "subscriber"): {
        ("", "namespaces", None): READ,
        ("multicluster.x-k8s.io", "serviceimports", None): OWN,
        ("multicluster.x-k8s.io", "serviceimports/status", None): PATCH,
        ("", "services", None): OWN,
        ("discovery.k8s.io", "endpointslices", None): OWN,
        ("multicluster.x-k8s.io", "serviceexports", None): READ,
        ("multicluster.x-k8s.io", "serviceexports/status", None): PATCH,
        ("about.k8s.io", "clusterproperties", "cluster.clusterset.k8s.io"): frozenset({"get"}),
        ("about.k8s.io", "clusterproperties", "clusterset.k8s.io"): frozenset({"get"}),
    },
    ("Role", "subscriber-inventory"): {
        ("multicluster.x-k8s.io", "clusterprofiles", None): OWN,
        ("multicluster.x-k8s.io", "clusterprofiles/status", None): PATCH,
    },
    ("Role", "subscriber-leases"): {
        ("coordination.k8s.io", "leases", None): OWN,
    },
}


def load_all(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def yaml_files() -> list[Path]:
    files = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    return [f for f in files if TEMPLATES not in f.parents]


def base_objects() -> list[Obj]:
    objs: list[Obj] = []
    for name in yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"]:
        objs += load_all(BASE / name)
    return objs


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o.get("kind") == kind]


def rules_of(role: Obj) -> dict[RuleKey, frozenset[str]]:
    out: dict[RuleKey, frozenset[str]] = {}
    for rule in role.get("rules", []):
        names: list[str | None] = list(rule.get("resourceNames") or [None])
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for name in names:
                    key = (group, resource, name)
                    out[key] = out.get(key, frozenset()) | frozenset(rule["verbs"])
    return out


def render_template_minimally(text: str) -> str:
    """Just enough of Helm for YAML: drop control lines and comments, stub expressions."""
    text = re.sub(r"\{\{-?\s*/\*.*?\*/\s*-?\}\}", "", text, flags=re.S)
    lines = [
        line for line in text.splitlines() if not re.fullmatch(r"\s*\{\{-?[^{}]*-?\}\}\s*", line)
    ]
    text = "\n".join(lines)
    text = re.sub(r'\{\{\s*include "mcsync\.fullname" \.\s*\}\}', "mcsync", text)
    return re.sub(r"\{\{[^{}]*\}\}", "x", text)


def helm_rbac_objects() -> list[Obj]:
    text = render_template_minimally((TEMPLATES / "rbac.yaml").read_text())
    return [d for d in yaml.safe_load_all(text) if d]


# helm is built with the control plane (engine/local/scripts/build-control-plane.sh): the test
# command always has it, so these tests never skip.
_BUILT_HELM = controlplane.bin_dir() / "helm"
HELM = str(_BUILT_HELM) if _BUILT_HELM.exists() else shutil.which("helm")


def helm_objects(*extra: str) -> list[Obj]:
    """The chart rendered by helm itself, as for cluster east of clusterset prod."""
    assert HELM is not None, "helm missing: run engine/local/scripts/build-control-plane.sh"
    out = subprocess.run(
        [
            HELM,
            "template",
            "mcsync",
            str(CHART),
            "--namespace=mcsync-system",
            "--set=clusterset=prod",
            "--set=clusterId=east",
            "--set=createClusterProperties=true",
            "--set=publisher.apiServerUrl=https://east.example.com:6443",
            *extra,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def kustomize_objects(*components: str) -> list[Obj]:
    """The base with the given components of deploy/kustomize/components, built by kustomize."""
    with tempfile.TemporaryDirectory() as tmp:
        # An overlay of the user's beside the shipped tree (kustomize wants relative paths).
        tree = Path(tmp) / "kustomize"
        shutil.copytree(DEPLOY / "kustomize", tree)
        overlay = tree / "overlays" / "test"
        overlay.mkdir()
        listed = "".join(f"  - ../../components/{c}\n" for c in components)
        (overlay / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            f"resources:\n  - ../../base\ncomponents:\n{listed}"
        )
        out = subprocess.run(
            ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=True
        ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@functools.cache
def single_process_objects(source: str) -> tuple[Obj, ...]:
    """The single-process variant: the chart with singleProcess.enabled, or the base with the
    single-process component."""
    if source == "helm":
        return tuple(helm_objects("--set=singleProcess.enabled=true"))
    return tuple(kustomize_objects("single-process"))


# --- every file parses -----------------------------------------------------------------------


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_file_under_deploy_parses(path: Path) -> None:
    assert load_all(path), f"{path} holds no document"


def test_the_chart_metadata_and_values_parse() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "mcsync"
    assert chart["version"] and chart["appVersion"] == "0.1.0"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert f"{values['image']['repository']}:{values['image']['tag']}" == IMAGE
    assert values["createStream"] is False
    assert values["nats"]["existingSecret"]
    assert "password" not in {k.lower() for k in values["nats"]}  # only key names, no secret


# --- RBAC: least privilege -------------------------------------------------------------------


def walk_rules(objs: list[Obj]) -> Iterator[Obj]:
    for o in objs:
        if o.get("kind") in ("ClusterRole", "Role"):
            yield from o.get("rules", [])


@pytest.mark.parametrize("source", ["kustomize", "helm-text", "helm"])
def test_rbac_grants_exactly_what_the_code_needs(source: str) -> None:
    objs = {"kustomize": base_objects, "helm-text": helm_rbac_objects, "helm": helm_objects}[
        source
    ]()
    roles = {
        (o["kind"], o["metadata"]["name"].removeprefix("mcsync-")): o
        for o in objs
        if o.get("kind") in ("ClusterRole", "Role")
    }
    assert set(roles) == set(EXPECTED_RULES)
    for key, expected in EXPECTED_RULES.items():
        assert rules_of(roles[key]) == expected, key


def test_no_rbac_rule_uses_a_wildcard() -> None:
    objs = base_objects() + helm_rbac_objects()
    for rule in walk_rules(objs):
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in (rule.get(field) or []), rule
    for path in [*DEPLOY.rglob("*.yaml"), *(p for p in TEMPLATES.rglob("*") if p.is_file())]:
        assert not re.search(r"""(verbs|resources|apiGroups):\s*\[?\s*["']\*""", path.read_text())


def test_every_binding_names_an_existing_role_and_the_right_service_account() -> None:
    objs = base_objects()
    roles = {(o["kind"], o["metadata"]["name"]) for o in objs if o["kind"].endswith("Role")}
    accounts = {o["metadata"]["name"] for o in of_kind(objs, "ServiceAccount")}
    for binding in of_kind(objs, "ClusterRoleBinding") + of_kind(objs, "RoleBinding"):
        ref = binding["roleRef"]
        assert (ref["kind"], ref["name"]) in roles
        (subject,) = binding["subjects"]
        assert subject["kind"] == "ServiceAccount" and subject["name"] in accounts
        assert subject["namespace"] == "mcsync-system"
        component = ref["name"].removeprefix("mcsync-").split("-")[0]
        assert subject["name"] == f"mcsync-{component}"


# --- Deployments -----------------------------------------------------------------------------


def deployments() -> list[Obj]:
    return of_kind(base_objects(), "Deployment")


def all_deployments() -> list[Any]:
    """The kustomize Deployments and the ones helm renders from the chart."""
    params: list[Any] = [
        pytest.param(lambda d=d: d, id=f"kustomize-{d['metadata']['name']}") for d in deployments()
    ]
    for name in ("mcsync-publisher", "mcsync-subscriber"):

        def rendered(name: str = name) -> Obj:
            (d,) = [
                o for o in of_kind(helm_objects(), "Deployment") if o["metadata"]["name"] == name
            ]
            return d

        params.append(pytest.param(rendered, id=f"helm-{name}"))
    for source in ("kustomize", "helm"):

        def member(source: str = source) -> Obj:
            (d,) = of_kind(list(single_process_objects(source)), "Deployment")
            return d

        params.append(pytest.param(member, id=f"{source}-mcsync-member"))
    return params


def test_there_is_one_deployment_per_component() -> None:
    names = sorted(d["metadata"]["name"] for d in deployments())
    assert names == ["mcsync-publisher", "mcsync-subscriber"]


@pytest.mark.parametrize("get", all_deployments())
def test_a_deployment_runs_one_hardened_replica(get: Any) -> None:
    deployment = get()
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    component = deployment["metadata"]["name"].removeprefix("mcsync-")
    assert pod["serviceAccountName"] == f"mcsync-{component}"
    assert container["args"][0] == component
    assert "--no-create-stream" in container["args"]
    assert "--health-port=8080" in container["args"]
    own = {
        "publisher": ["--heartbeat-interval="],
        "subscriber": [
            "--inventory-namespace=",
            "--lease-namespace=",
            "--staleness-lease=",
            "--staleness-policy=",
            "--quiet-seconds=",
            "--burst-quiet-seconds=",
            "--max-delay-seconds=",
        ],
    }
    extra = own[component] if component in own else own["publisher"] + own["subscriber"]
    for prefix in extra:
        assert any(a.startswith(prefix) for a in container["args"]), prefix


@pytest.mark.parametrize("get", all_deployments())
def test_every_argument_is_an_option_of_the_command_it_runs(get: Any) -> None:
    from typer.main import get_command

    from engine.cli import app

    (container,) = get()["spec"]["template"]["spec"]["containers"]
    command = get_command(app).commands[container["args"][0]]  # type: ignore[attr-defined]
    options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    for arg in container["args"][1:]:
        assert arg.split("=", 1)[0] in options, arg


@pytest.mark.parametrize("get", all_deployments())
def test_the_nats_password_is_a_mounted_secret_file_never_an_env_value(get: Any) -> None:
    pod = get()["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (arg,) = [a for a in container["args"] if a.startswith("--nats-password-file=")]
    path = arg.split("=", 1)[1]
    secret_volumes = {v["name"]: v for v in pod["volumes"] if "secret" in v}
    mounts = [
        m
        for m in container["volumeMounts"]
        if m["name"] in secret_volumes and path.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    assert len(mounts) == 1 and mounts[0]["readOnly"] is True
    volume = secret_volumes[mounts[0]["name"]]["secret"]
    assert volume["secretName"] == "mcsync-nats"
    assert volume["defaultMode"] == 0o440  # readable by the pod's fsGroup, nobody else
    for env in container.get("env", []):
        assert "value" not in env or not re.search(r"(?i)pass|secret|token", env["name"])
        assert "secretKeyRef" not in env.get("valueFrom", {})
    assert "envFrom" not in container


def test_no_secret_object_is_committed() -> None:
    for path in yaml_files():
        for doc in load_all(path):
            assert doc.get("kind") != "Secret", path
    for path in (p for p in TEMPLATES.rglob("*") if p.is_file()):
        assert not re.search(r"(?m)^kind:\s*Secret\b", path.read_text()), path


def test_the_helm_deployments_carry_the_same_hardening() -> None:
    helpers = (TEMPLATES / "_helpers.tpl").read_text()
    for needle in ("path: /healthz", "path: /readyz", "startupProbe", "secretName", "0440"):
        assert needle in helpers, needle
    assert "secretKeyRef" not in helpers
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsNonRoot"] is True
    assert values["containerSecurityContext"]["readOnlyRootFilesystem"] is True
    assert values["containerSecurityContext"]["capabilities"]["drop"] == ["ALL"]
    for component in ("publisher", "subscriber", "member"):
        text = (TEMPLATES / f"{component}.yaml").read_text()
        for needle in (
            "replicas: 1",
            "type: Recreate",
            '"mcsync.probes"',
            "containerSecurityContext",
            "podSecurityContext",
            ".resources",
            '"mcsync.volumes"',
        ):
            assert needle in text, (component, needle)
    for part in ("publisher", "subscriber", "singleProcess"):
        assert set(values[part]["resources"]) == {"requests", "limits"}


def test_the_chart_ships_the_same_crds_as_deploy_crds() -> None:
    ours = {p.name: p.read_text() for p in (DEPLOY / "crds").glob("*.yaml")}
    chart = {p.name: p.read_text() for p in (CHART / "crds").glob("*.yaml")}
    assert chart == ours, "copy deploy/crds/*.yaml into deploy/helm/mcsync/crds/"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) not found")
def test_the_example_overlay_builds_with_kustomize() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(OVERLAY)], capture_output=True, text=True, check=True
    ).stdout
    objs = [d for d in yaml.safe_load_all(out) if d]
    (config,) = of_kind(objs, "ConfigMap")
    assert config["data"] == {
        "clusterset": "prod",
        "nats-url": "tls://nats.example.com:4222",
        "nats-user": "cluster-1",
    }
    properties = {
        o["metadata"]["name"]: o["spec"]["value"] for o in of_kind(objs, "ClusterProperty")
    }
    assert properties == {"cluster.clusterset.k8s.io": "cluster-1", "clusterset.k8s.io": "prod"}
    for d in of_kind(objs, "Deployment"):
        (container,) = d["spec"]["template"]["spec"]["containers"]
        refs = {
            e["valueFrom"]["configMapKeyRef"]["name"]
            for e in container["env"]
            if "configMapKeyRef" in e["valueFrom"]
        }
        assert refs == {config["metadata"]["name"]}
        if d["metadata"]["name"] == "mcsync-publisher":
            assert "--api-server-url=https://cluster-1.example.com:6443" in container["args"]


# --- compose.yaml and the Dockerfile ---------------------------------------------------------


def compose() -> Obj:
    doc: Obj = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return doc


def test_compose_services_reference_existing_build_contexts_files_and_volumes() -> None:
    doc = compose()
    services: dict[str, Obj] = doc["services"]
    named = set(doc.get("volumes") or {})
    for name, svc in services.items():
        build = svc.get("build")
        if build is not None:
            context = ROOT / build["context"]
            assert context.is_dir(), name
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
        else:
            image = svc["image"]
            assert ":" in image and not image.endswith(":latest"), name
        for dep in svc.get("depends_on") or {}:
            assert dep in services, (name, dep)
        for volume in svc.get("volumes") or []:
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), (name, source)
            else:
                assert source in named, (name, source)


def test_compose_runs_a_k3s_server_a_publisher_and_a_subscriber_per_cluster() -> None:
    services = compose()["services"]
    for cluster in ("east", "west"):
        assert services[f"k3s-{cluster}"]["image"].startswith("rancher/k3s:")
        for component in ("publisher", "subscriber"):
            svc = services[f"{component}-{cluster}"]
            assert svc["image"] == IMAGE
            assert svc["command"][0] == component  # the image's entrypoint is mcsync
            assert f"k3s-{cluster}" in svc["depends_on"]
            assert svc["environment"]["MCSYNC_NATS_URL"] == "nats://nats:4222"
        identity = load_all(DEPLOY / "compose" / cluster / "identity.yaml")
        values = {d["metadata"]["name"]: d["spec"]["value"] for d in identity}
        assert values["cluster.clusterset.k8s.io"] == cluster
        assert (
            values["clusterset.k8s.io"]
            == services[f"publisher-{cluster}"]["environment"]["MCSYNC_CLUSTERSET"]
        )


def test_the_image_installs_what_the_lock_pins_and_runs_as_a_non_root_user() -> None:
    text = (ROOT / "Dockerfile").read_text()
    # The base is pinned by digest: an official Python 3.11 slim image, one build of it.
    assert re.search(r"(?m)^ARG BASE=python:3\.11(\.\d+)?-slim(-\w+)?@sha256:[0-9a-f]{64}$", text)
    assert re.search(r"(?m)^FROM \$\{BASE\}$", text)
    # Reproducible: the dependencies come from uv.lock (frozen), without the dev group, by the
    # install script the Dockerfile runs (the local image build runs it too).
    assert re.search(r"COPY pyproject\.toml uv\.lock", text)
    assert re.search(r"(?m)^COPY deploy/image/install\.sh ", text)
    assert re.search(r"(?m)^RUN sh deploy/image/install\.sh deps$", text)
    assert re.search(r"(?m)^RUN sh deploy/image/install\.sh project ", text)
    script = (DEPLOY / "image" / "install.sh").read_text()
    assert re.search(r"uv sync --frozen --no-dev --no-editable", script)
    assert "pip install ." not in text + script
    (user,) = re.findall(r"(?m)^USER (\S+)$", text)
    assert user.split(":")[0].isdigit() and user.split(":")[0] != "0"
    uid = user.split(":")[0]
    assert f"--uid {uid} " in script and f"--gid {user.split(':')[1]} " in script
    assert re.search(r'(?m)^ENTRYPOINT \["mcsync"\]$', text)


def test_the_local_image_has_the_dockerfiles_user_entrypoint_and_environment() -> None:
    """engine/local/images.py writes the OCI config of the locally built image: it says what
    the Dockerfile says."""
    text = (ROOT / "Dockerfile").read_text()
    (user,) = re.findall(r"(?m)^USER (\S+)$", text)
    assert images.MCSYNC.user == user
    assert list(images.MCSYNC.entrypoint) == ["mcsync"]
    assert list(images.MCSYNC.cmd) == ["--help"]
    for var in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"):
        assert var in text and var in images.MCSYNC.env
    assert any(e.startswith("PATH=/opt/mcsync/bin:") for e in images.MCSYNC.env)
    # The chart's default image, as the CRI names it.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert images.MCSYNC.name == f"docker.io/library/{values['image']['repository']}:" + str(
        values["image"]["tag"]
    )


def test_the_build_script_and_images_name_the_mcsync_image_by_the_same_hash() -> None:
    script = ROOT / "engine" / "local" / "scripts" / "build-control-plane.sh"
    out = subprocess.run(
        ["bash", str(script), "--mcsync-image-path"], capture_output=True, text=True, check=True
    )
    names = tuple(Path(line).name for line in out.stdout.split())
    assert names == images.mcsync_layer_names(ROOT)


# --- the NATS configs ------------------------------------------------------------------------


def test_the_nats_configs_in_deploy_are_what_natsconfig_renders_now() -> None:
    rendered = natsconfig.examples()
    shipped = {p.name: p.read_text() for p in (DEPLOY / "nats").glob("*.conf")}
    assert set(shipped) == set(rendered)
    for name, text in rendered.items():
        assert shipped[name] == text, (
            f"deploy/nats/{name} is stale: write natsconfig.examples()[{name!r}] to it"
        )


def test_the_shipped_nats_configs_hold_no_real_secret() -> None:
    for path in (DEPLOY / "nats").glob("*.conf"):
        for value in re.findall(r'password: "([^"]*)"', path.read_text()):
            assert "REPLACEWITHBCRYPTHASH" in value, path
        for value in re.findall(r'nkey: "([^"]*)"', path.read_text()):
            assert "PLACEHOLDER" in value, path


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: '*' is one token, a final '>' one or more."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def allowed(perms: natsconfig.Permissions, subject: str) -> bool:
    return any(matches(p, subject) for p in perms.publish_allow) and not any(
        matches(p, subject) for p in perms.publish_deny
    )


def test_the_names_agree_with_the_event_log() -> None:
    assert natsconfig.stream("prod") == subjects.stream_name("prod")
    assert natsconfig.dead_letter_stream("prod") == jetstream.dead_letter_stream("prod")
    assert natsconfig.dead_letter_subject("prod", "east") == jetstream.dead_letter_subject(
        "prod", "east"
    )


def test_a_cluster_may_publish_its_own_subjects_and_no_other_clusters() -> None:
    east = natsconfig.cluster_permissions("prod", "east")
    own = [
        subjects.export("prod", "east", "ns", "web"),
        subjects.endpoint_slice("prod", "east", "ns", "web", "web-abc"),
        subjects.heartbeat("prod", "east"),
        subjects.lease("prod", "east", "leader"),
        natsconfig.dead_letter_subject("prod", "east"),
    ]
    others = [
        subjects.export("prod", "west", "ns", "web"),
        subjects.cluster("prod", "west"),
        subjects.lease("prod", "west", "leader"),
        subjects.export("other", "east", "ns", "web"),
        natsconfig.dead_letter_subject("prod", "west"),
        "$JS.API.STREAM.DELETE.MCSYNC_PROD",
        "$JS.API.STREAM.PURGE.MCSYNC_PROD",
        "$JS.API.STREAM.UPDATE.MCSYNC_PROD",
        "$JS.API.STREAM.CREATE.MCSYNC_PROD",
        "$JS.API.STREAM.MSG.DELETE.MCSYNC_PROD",
        "$JS.API.CONSUMER.DURABLE.CREATE.MCSYNC_PROD.x",
        "$JS.API.STREAM.INFO.MCSYNCDLQ_PROD",
    ]
    assert all(allowed(east, s) for s in own)
    assert not [s for s in others if allowed(east, s)]
    assert east.subscribe_allow == ("_INBOX.>",)


def test_the_observer_and_the_admin_publish_no_event() -> None:
    events = [
        subjects.export("prod", "east", "ns", "web"),
        natsconfig.dead_letter_subject("prod", "east"),
    ]
    for perms in (natsconfig.observer_permissions("prod"), natsconfig.admin_permissions("prod")):
        assert not [s for s in events if allowed(perms, s)]
    observer = natsconfig.observer_permissions("prod")
    assert not allowed(observer, "$JS.API.STREAM.PURGE.MCSYNC_PROD")
    assert allowed(observer, "$JS.API.CONSUMER.CREATE.MCSYNCDLQ_PROD")
    assert allowed(natsconfig.admin_permissions("prod"), "$JS.API.STREAM.CREATE.MCSYNC_PROD")


@pytest.mark.parametrize("cluster", ["*", ">", "a.b", "East", "", "a b"])
def test_a_cluster_id_that_is_not_a_dns_label_is_refused(cluster: str) -> None:
    with pytest.raises(ValueError):
        natsconfig.cluster_permissions("prod", cluster)


def test_a_clear_text_password_renders_only_for_local_tests() -> None:
    user = natsconfig.cluster_user("prod", "east", natsconfig.plain_password("local-only"))
    with pytest.raises(ValueError, match="clear-text"):
        natsconfig.render_accounts([user])
    assert 'password: "local-only"' in natsconfig.render_accounts([user], allow_plain=True)


def test_logins_are_validated_and_never_shown_in_repr() -> None:
    with pytest.raises(ValueError):
        natsconfig.bcrypt_password("not-a-hash")
    with pytest.raises(ValueError):
        natsconfig.nkey("SUAAAA")  # a seed is not a public key
    login = natsconfig.placeholder_hash("east")
    assert login.value not in repr(login)
    assert login.value not in repr(natsconfig.cluster_user("prod", "east", login))


def test_an_empty_allow_list_is_refused_because_it_would_allow_everything() -> None:
    with pytest.raises(ValueError, match="empty allow-list"):
        natsconfig.Permissions(publish_allow=(), subscribe_allow=("_INBOX.>",))


def test_a_leaf_link_sends_no_event_subject_into_the_hub() -> None:
    link = natsconfig.leaf_link_permissions("prod", "east")
    for subject in (
        subjects.export("prod", "east", "ns", "web"),
        subjects.export("prod", "west", "ns", "web"),
        "$JS.hub.API.STREAM.DELETE.MCSYNC_PROD",
        "$JS.hub.API.STREAM.PURGE.MCSYNC_PROD",
    ):
        assert not allowed(link, subject), subject


def test_a_leaf_config_refuses_credentials_in_the_hub_url() -> None:
    leaf = natsconfig.Leaf(
        clusterset="prod",
        cluster="east",
        hub_urls=("nats-leaf://leaf-east:secret@hub.example.com:7422",),
        local=natsconfig.placeholder_hash("east"),
        admin=natsconfig.placeholder_hash("admin"),
    )
    with pytest.raises(ValueError, match="without credentials"):
        natsconfig.render_leaf(leaf)


def test_nats_tls_files_come_from_a_mounted_secret_and_are_options_of_every_command() -> None:
    from typer.main import get_command

    from engine.cli import app

    objs = helm_objects(
        "--set=nats.tls.secretName=nats-tls",
        "--set=nats.tls.clientCertKey=tls.crt",
        "--set=nats.tls.clientKeyKey=tls.key",
    )
    deployments = of_kind(objs, "Deployment")
    assert deployments
    for d in deployments:
        pod = d["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        command = get_command(app).commands[container["args"][0]]  # type: ignore[attr-defined]
        options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        files = {
            a.split("=", 1)[0]: a.split("=", 1)[1]
            for a in container["args"]
            if a.startswith(("--nats-ca-file", "--nats-cert-file", "--nats-key-file"))
        }
        assert set(files) == {"--nats-ca-file", "--nats-cert-file", "--nats-key-file"}
        assert set(files) <= options
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "nats-tls"]
        assert mount["readOnly"] is True
        assert all(f.startswith(mount["mountPath"] + "/") for f in files.values())
        (volume,) = [v for v in pod["volumes"] if v["name"] == "nats-tls"]
        assert volume["secret"]["secretName"] == "nats-tls"
        assert volume["secret"]["defaultMode"] == 0o440


def _helm(*args: str) -> subprocess.CompletedProcess[str]:
    assert HELM is not None, "helm missing: run engine/local/scripts/build-control-plane.sh"
    return subprocess.run(
        [HELM, "template", "mcsync", str(CHART), "--namespace=mcsync-system", *args],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    "bad",
    [
        "--set=clusterId=East_1",
        "--set=subscriber.stalenessPolicy=forget",
        "--set=logLevel=verbose",
        "--set=nats.url=nats.example.com:4222",
        "--set=subscriber.inventoryNamespace=Bad_NS",
        "--set=publisher.heartbeatInterval=0",
        "--set=typo=1",
        "--set=singleProcess.typo=1",
        "--set=subscriber.stateDir.typo=1",
        "--set=subscriber.stateDir.sizeLimit=lots",
    ],
)
def test_the_chart_refuses_values_outside_its_schema(bad: str) -> None:
    out = _helm("--set=clusterset=prod", "--set=clusterId=east", bad)
    assert out.returncode != 0
    assert "values don't meet the specifications of the schema" in out.stderr, out.stderr


def test_namespaces_other_than_the_release_namespace_are_created_and_kept() -> None:
    out = _helm(
        "--set=clusterset=prod",
        "--set=clusterId=east",
        "--set=subscriber.inventoryNamespace=fleet-inventory",
        "--set=subscriber.leaseNamespace=fleet-inventory",
    )
    assert out.returncode == 0, out.stderr
    objs = [d for d in yaml.safe_load_all(out.stdout) if d]
    (ns,) = of_kind(objs, "Namespace")
    assert ns["metadata"]["name"] == "fleet-inventory"
    assert ns["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    roles = {r["metadata"]["namespace"] for r in of_kind(objs, "Role")}
    assert roles == {"fleet-inventory"}
    # In the release namespace nothing is created (it exists: helm installs into it).
    default = [d for d in yaml.safe_load_all(_helm(
        "--set=clusterset=prod", "--set=clusterId=east").stdout) if d]  # fmt: skip
    assert of_kind(default, "Namespace") == []


def test_helm_and_kustomize_give_the_deployments_the_same_names_and_selectors() -> None:
    """So a cluster can switch from one to the other in place (selectors are immutable)."""
    helm = {d["metadata"]["name"]: d for d in of_kind(helm_objects(), "Deployment")}
    kustomize = {d["metadata"]["name"]: d for d in deployments()}
    assert set(helm) == set(kustomize) == {"mcsync-publisher", "mcsync-subscriber"}
    for name, d in kustomize.items():
        assert d["spec"]["selector"] == helm[name]["spec"]["selector"], name


def test_helm_test_runs_mcsync_status_with_the_clusters_nats_login() -> None:
    from typer.main import get_command

    from engine.cli import app

    (pod,) = [o for o in of_kind(helm_objects(), "Pod") if "status-test" in o["metadata"]["name"]]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["args"][0] == "status"
    command = get_command(app).commands["status"]  # type: ignore[attr-defined]
    options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    for arg in container["args"][1:]:
        assert arg.split("=", 1)[0] in options, arg
    assert "--nats-password-file=/etc/mcsync/nats/password" in container["args"]
    assert pod["spec"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize(
    ("components", "names"),
    [
        (["nats-tls"], {"mcsync-publisher", "mcsync-subscriber"}),
        (["single-process", "nats-tls"], {"mcsync-member"}),
    ],
)
def test_the_kustomize_tls_component_mounts_the_files_and_passes_options(
    components: list[str], names: set[str]
) -> None:
    from typer.main import get_command

    from engine.cli import app

    deployments = of_kind(kustomize_objects(*components), "Deployment")
    assert {d["metadata"]["name"] for d in deployments} == names
    for d in deployments:
        pod = d["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        command = get_command(app).commands[container["args"][0]]  # type: ignore[attr-defined]
        options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        tls = [a for a in container["args"] if a.startswith("--nats-") and "-file=" in a]
        assert {a.split("=", 1)[0] for a in tls} >= {
            "--nats-ca-file",
            "--nats-cert-file",
            "--nats-key-file",
        }
        assert all(a.split("=", 1)[0] in options for a in tls)
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "nats-tls"]
        assert mount["readOnly"] is True
        (volume,) = [v for v in pod["volumes"] if v["name"] == "nats-tls"]
        assert volume["secret"]["defaultMode"] == 0o440


def test_the_optional_metrics_service_monitor_and_network_policy_render_when_asked() -> None:
    default = [d for d in yaml.safe_load_all(_helm(
        "--set=clusterset=prod", "--set=clusterId=east").stdout) if d]  # fmt: skip
    for kind in ("ServiceMonitor", "NetworkPolicy", "Service"):
        assert of_kind(default, kind) == [], kind
    out = _helm(
        "--set=clusterset=prod",
        "--set=clusterId=east",
        "--set=metrics.service.enabled=true",
        "--set=metrics.serviceMonitor.enabled=true",
        "--set=networkPolicy.enabled=true",
    )
    assert out.returncode == 0, out.stderr
    objs = [d for d in yaml.safe_load_all(out.stdout) if d]
    deployments = {d["metadata"]["name"]: d for d in of_kind(objs, "Deployment")}
    services = of_kind(objs, "Service")
    assert len(services) == 2
    for svc in services:
        component = svc["spec"]["selector"]["app.kubernetes.io/component"]
        pod = deployments[f"mcsync-{component}"]["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= pod.items()
        assert svc["spec"]["ports"][0]["targetPort"] == "health"
    (monitor,) = of_kind(objs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items()
        <= services[0]["metadata"]["labels"].items()
    )
    (policy,) = of_kind(objs, "NetworkPolicy")
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 4222, 443, 6443}
    assert [p["port"] for p in policy["spec"]["ingress"][0]["ports"]] == [8080]


# --- the single-process variant --------------------------------------------------------------


@pytest.mark.parametrize("source", ["kustomize", "helm"])
def test_single_process_runs_one_member_bound_to_both_parts_roles(source: str) -> None:
    """One Deployment and one ServiceAccount; the roles are the two parts' own, unchanged, and
    every binding names the member: its grants are exactly the union of the two."""
    objs = list(single_process_objects(source))
    assert [d["metadata"]["name"] for d in of_kind(objs, "Deployment")] == ["mcsync-member"]
    assert [a["metadata"]["name"] for a in of_kind(objs, "ServiceAccount")] == ["mcsync-member"]
    roles = {
        (o["kind"], o["metadata"]["name"].removeprefix("mcsync-")): o
        for o in objs
        if o.get("kind") in ("ClusterRole", "Role")
    }
    assert set(roles) == set(EXPECTED_RULES)
    for key, expected in EXPECTED_RULES.items():
        assert rules_of(roles[key]) == expected, key
    bindings = of_kind(objs, "ClusterRoleBinding") + of_kind(objs, "RoleBinding")
    assert {(b["roleRef"]["kind"], b["roleRef"]["name"]) for b in bindings} == {
        (kind, f"mcsync-{name}") for kind, name in EXPECTED_RULES
    }
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "mcsync-member", "namespace": "mcsync-system"}
        ]


@pytest.mark.parametrize("source", ["kustomize", "helm"])
def test_single_process_fences_the_member_as_the_subscriber_was(source: str) -> None:
    """The admission fence names the account the subscriber now runs as, and nothing else of
    it changes."""
    objs = list(single_process_objects(source))
    two_pods = base_objects() if source == "kustomize" else helm_objects()
    (policy,) = of_kind(objs, "ValidatingAdmissionPolicy")
    (before,) = of_kind(two_pods, "ValidatingAdmissionPolicy")
    (condition,) = policy["spec"]["matchConditions"]
    assert "mcsync-member'" in condition["expression"]
    assert "mcsync-subscriber" not in condition["expression"]
    assert "mcsync-subscriber'" in before["spec"]["matchConditions"][0]["expression"]
    for key in ("matchConstraints", "variables", "validations", "failurePolicy"):
        assert policy["spec"][key] == before["spec"][key], key
    assert of_kind(objs, "ValidatingAdmissionPolicyBinding")


def test_helm_and_kustomize_give_the_member_the_same_name_and_selector() -> None:
    (helm,) = of_kind(list(single_process_objects("helm")), "Deployment")
    (kustomize,) = of_kind(list(single_process_objects("kustomize")), "Deployment")
    assert helm["metadata"]["name"] == kustomize["metadata"]["name"] == "mcsync-member"
    assert helm["spec"]["selector"] == kustomize["spec"]["selector"]


def test_single_process_needs_both_parts_enabled() -> None:
    out = _helm(
        "--set=clusterset=prod",
        "--set=clusterId=east",
        "--set=singleProcess.enabled=true",
        "--set=publisher.enabled=false",
    )
    assert out.returncode != 0
    assert "singleProcess runs both" in out.stderr


def test_single_process_serves_one_metrics_service() -> None:
    out = _helm(
        "--set=clusterset=prod",
        "--set=clusterId=east",
        "--set=singleProcess.enabled=true",
        "--set=metrics.service.enabled=true",
    )
    assert out.returncode == 0, out.stderr
    objs = [d for d in yaml.safe_load_all(out.stdout) if d]
    (svc,) = of_kind(objs, "Service")
    (member,) = of_kind(objs, "Deployment")
    labels = member["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert labels["app.kubernetes.io/component"] == "member"


def test_the_example_overlay_advertises_the_api_server_in_either_layout(tmp_path: Path) -> None:
    """Its publisher patch reaches the member too when the overlay adds the component."""
    tree = tmp_path / "kustomize"
    shutil.copytree(DEPLOY / "kustomize", tree)
    overlay = tree / "overlays" / "example-cluster-1"
    text = (overlay / "kustomization.yaml").read_text()
    (overlay / "kustomization.yaml").write_text(
        text + "components:\n  - ../../components/single-process\n"
    )
    out = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=True
    ).stdout
    (member,) = of_kind([d for d in yaml.safe_load_all(out) if d], "Deployment")
    (container,) = member["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] == "member"
    assert "--api-server-url=https://cluster-1.example.com:6443" in container["args"]


# --- the subscriber's state directory (warm restart) ------------------------------------------


STATE_VARIANTS: dict[str, Callable[[], list[Obj]]] = {
    "helm": lambda: helm_objects("--set=subscriber.stateDir.enabled=true"),
    "helm-member": lambda: helm_objects(
        "--set=subscriber.stateDir.enabled=true", "--set=singleProcess.enabled=true"
    ),
    "kustomize": lambda: kustomize_objects("state-dir"),
    "kustomize-member": lambda: kustomize_objects("single-process", "state-dir"),
}


@pytest.mark.parametrize("variant", list(STATE_VARIANTS))
def test_the_state_dir_is_a_volume_of_the_pod_running_the_subscriber_when_asked(
    variant: str,
) -> None:
    from typer.main import get_command

    from engine.cli import app

    deployments = {
        d["metadata"]["name"]: d for d in of_kind(STATE_VARIANTS[variant](), "Deployment")
    }
    subscriber = "mcsync-member" if variant.endswith("member") else "mcsync-subscriber"
    for name, d in deployments.items():
        pod = d["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        state_args = [a for a in container["args"] if a.startswith("--state-dir")]
        mounts = [m for m in container["volumeMounts"] if m["name"] == "state"]
        volumes = [v for v in pod["volumes"] if v["name"] == "state"]
        if name != subscriber:  # the publisher's pod keeps no state
            assert not (state_args or mounts or volumes), name
            continue
        assert state_args == ["--state-dir=/var/lib/mcsync"]
        command = get_command(app).commands[container["args"][0]]  # type: ignore[attr-defined]
        assert "--state-dir" in {o for p in command.params for o in p.opts}
        assert mounts == [{"name": "state", "mountPath": "/var/lib/mcsync"}]
        assert volumes == [{"name": "state", "emptyDir": {"sizeLimit": "1Gi"}}]


def test_the_state_dir_is_off_by_default_and_may_be_a_volume_of_ones_own() -> None:
    for d in of_kind(helm_objects(), "Deployment"):
        (container,) = d["spec"]["template"]["spec"]["containers"]
        assert not any(a.startswith("--state-dir") for a in container["args"])
        assert "state" not in {v["name"] for v in d["spec"]["template"]["spec"]["volumes"]}
    objs = helm_objects(
        "--set=subscriber.stateDir.enabled=true",
        "--set=subscriber.stateDir.volume.persistentVolumeClaim.claimName=mcsync-state",
    )
    (d,) = [o for o in of_kind(objs, "Deployment") if o["metadata"]["name"] == "mcsync-subscriber"]
    (volume,) = [v for v in d["spec"]["template"]["spec"]["volumes"] if v["name"] == "state"]
    assert volume == {"name": "state", "persistentVolumeClaim": {"claimName": "mcsync-state"}}
