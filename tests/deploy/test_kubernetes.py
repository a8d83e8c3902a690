"""deploy/kubernetes: every manifest is valid against Kubernetes' own schemas (bundled
by kubernetes-validate, strict: an unknown or misspelt field fails), and the wiring that
matters holds: ports, probes, env names, selectors, the Secret, the security context."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from deploy_helpers import (
    COMPOSE,
    CONTAINERFILE,
    KUBERNETES,
    SECRET_TEMPLATE,
    VAULT_ENV_NAMES,
    effective_config,
    healthcheck,
    image_env,
    image_user,
    port_of,
    vaultctl_args,
    yaml_document,
    yaml_documents,
)

from vault.cli.main import _health
from vault.config import Config
from vault.server import TOKEN_SERVICE
from vault.wiring import check_listen

# The oldest Kubernetes the manifests are for (a supported release; the probes are exec) and
# the newest the bundled schemas know.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
KUSTOMIZATION = KUBERNETES / "kustomization.yaml"
# Every API object file (the kustomization is kustomize's, not the API server's).
MANIFESTS = sorted(set(KUBERNETES.glob("*.yaml")) - {KUSTOMIZATION})
CALLER_NAMESPACES = {"checkout", "ops"}
MONITORING_NAMESPACES = {"monitoring"}
# cert-manager's objects: applied after cert-manager is installed, not by the kustomization.
CERT_MANAGER = KUBERNETES / "cert-manager"


def _resources() -> list[dict[str, Any]]:
    kustomization = yaml_document(KUSTOMIZATION)
    return [doc for name in kustomization["resources"] for doc in yaml_documents(KUBERNETES / name)]


def _one(kind: str) -> dict[str, Any]:
    [doc] = [d for d in _resources() if d["kind"] == kind]
    return doc


def _pod() -> dict[str, Any]:
    return _one("Deployment")["spec"]["template"]


def _vault_container() -> dict[str, Any]:
    [container] = [c for c in _pod()["spec"]["containers"] if c["name"] == "vault"]
    return container


def _all_containers() -> list[dict[str, Any]]:
    spec = _pod()["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def _container_port(name: str) -> int:
    [port] = [p["containerPort"] for p in _vault_container()["ports"] if p["name"] == name]
    return int(port)


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels", "matchExpressions"}, selector
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        present = expr["key"] in labels
        value = labels.get(expr["key"])
        match expr["operator"]:
            case "In":
                ok = value in expr["values"]
            case "NotIn":
                ok = value not in expr["values"]
            case "Exists":
                ok = present
            case "DoesNotExist":
                ok = not present
            case other:
                pytest.fail(f"unknown selector operator {other}")
        if not ok:
            return False
    return True


def _deployment_config(tmp_path: Path) -> Config:
    """The settings of the vault container as it would start: the image's environment,
    then the Deployment's (a Secret reference stands in as a placeholder), and the
    ConfigMap's vault.toml as the --config file its args name."""
    container = _vault_container()
    args = vaultctl_args(["serve", *container.get("args", [])])
    assert args.config is not None, "the vault reads the ConfigMap's TOML"
    env = image_env() | {e["name"]: e.get("value", "from-a-secret") for e in container["env"]}
    config_file = tmp_path / Path(args.config).name
    config_file.write_text(_config_toml(args.config), encoding="utf-8")
    return effective_config(env, config_file)


def _config_toml(path_in_container: str) -> str:
    """The text the ConfigMap volume puts at ``path_in_container``."""
    mounts = {m["name"]: m["mountPath"] for m in _vault_container()["volumeMounts"]}
    volumes = {v["name"]: v for v in _pod()["spec"]["volumes"]}
    configmap = _one("ConfigMap")
    for name, mount_path in mounts.items():
        source = volumes[name].get("configMap")
        if source and Path(path_in_container).parent == Path(mount_path):
            assert source["name"] == configmap["metadata"]["name"]
            return str(configmap["data"][Path(path_in_container).name])
    pytest.fail(f"no ConfigMap volume is mounted where {path_in_container} is")


# -- the files ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_is_valid_kubernetes(path, version):
    for doc in yaml_documents(path):
        kubernetes_validate.validate(doc, version, strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_template():
    listed = set(yaml_document(KUSTOMIZATION)["resources"])
    assert listed == {p.name for p in MANIFESTS} - {SECRET_TEMPLATE.name}


def test_kustomize_builds_the_same_objects():
    # kubectl is not installed by the project (Debian's is years old): where one is on
    # PATH, its kustomize must accept the kustomization and yield exactly these objects.
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl on PATH")
    built = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    objects = [d for d in yaml.safe_load_all(built.stdout) if d]
    assert sorted(objects, key=_identity) == sorted(_resources(), key=_identity)


def _identity(doc: dict[str, Any]) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def test_the_readme_applies_the_same_files_without_kustomize():
    readme = (KUBERNETES.parent / "README.md").read_text(encoding="utf-8")
    [command] = [
        block for block in readme.split("```") if "kubectl apply -f namespace.yaml" in block
    ]
    applied = set(re.findall(r"-f\s+(\S+\.yaml)", command))
    assert applied == set(yaml_document(KUSTOMIZATION)["resources"])


def test_everything_lives_in_the_vault_namespace():
    namespace = _one("Namespace")["metadata"]["name"]
    for doc in _resources():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, doc["metadata"]["name"]
    assert _one("Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == (
        "restricted"
    )


# -- ports and probes ---------------------------------------------------------------------


def test_container_ports_are_the_vaults_listen_and_metrics_ports(tmp_path):
    cfg = _deployment_config(tmp_path)
    assert _container_port("grpc") == port_of(cfg.listen)
    assert _container_port("metrics") == port_of(cfg.metrics_listen)
    assert cfg.listen.startswith("0.0.0.0:")
    assert cfg.metrics_listen.startswith("0.0.0.0:")
    assert cfg.database_url, "the replicas share PostgreSQL"


def _probe_args(probe: dict[str, Any]) -> Any:
    """The probe's `vaultctl health` command, parsed by vaultctl's own parser."""
    assert set(probe) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"exec"}
    command = probe["exec"]["command"]
    assert command[:2] == ["vaultctl", "health"], command
    return vaultctl_args(command[1:])


def test_probes_ask_grpc_health_on_the_grpc_port_with_the_contract_services(tmp_path):
    # The kubelet's native grpc: probe speaks plaintext only, so the probes run
    # `vaultctl health` over TLS (mTLS with the server's own certificate) in the pod.
    cfg = _deployment_config(tmp_path)
    container = _vault_container()
    grpc_port = _container_port("grpc")
    probes = {k: container[k] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    services = {}
    for name, probe in probes.items():
        args = _probe_args(probe)
        assert args.handler is _health, name
        assert args.address == f"127.0.0.1:{grpc_port}", name
        assert port_of(args.address) == port_of(cfg.listen), name
        assert args.tls_ca == cfg.client_ca, name
        assert (args.tls_cert, args.tls_key) == (cfg.tls_cert, cfg.tls_key), name
        assert not args.insecure, name
        # vaultctl gives up before the kubelet does.
        assert args.timeout < probe["timeoutSeconds"], name
        services[name] = args.service
    # Health contract: "" is SERVING while the process runs, the TokenService only when
    # the vault can serve. Restarting on "not ready" would turn a sealed vault or a
    # database outage into a restart loop.
    assert services["livenessProbe"] == ""
    assert services["startupProbe"] == ""
    assert services["readinessProbe"] == TOKEN_SERVICE


def test_a_non_loopback_listen_comes_with_tls_and_mtls(tmp_path):
    cfg = _deployment_config(tmp_path)
    assert not cfg.listen.startswith(("127.", "[::1]", "localhost"))
    assert cfg.tls_cert
    assert cfg.tls_key
    assert cfg.client_ca
    assert not cfg.insecure_plaintext
    check_listen(cfg, tls=True)  # what `vaultctl serve` checks before it binds
    # The files are where the pod has them: certificate and CA from the cert-manager
    # Secret's volume, the key as the init container's 0600 copy in the data dir.
    mounts = {m["name"]: m["mountPath"] for m in _vault_container()["volumeMounts"]}
    volumes = {v["name"]: v for v in _pod()["spec"]["volumes"]}
    [tls_source] = volumes["tls"]["projected"]["sources"]
    assert tls_source["secret"]["name"] == _server_certificate()["spec"]["secretName"]
    paths = {
        item["key"]: Path(mounts["tls"]) / item["path"] for item in tls_source["secret"]["items"]
    }
    assert Path(cfg.tls_cert) == paths["tls.crt"]
    assert Path(cfg.client_ca) == paths["ca.crt"]
    assert Path(cfg.tls_key).parent == cfg.data_dir
    [copy] = [c for c in _pod()["spec"]["initContainers"] if c["name"] == "tls-key"]
    assert copy["command"] == ["install", "-m", "0600", str(paths["tls.key"]), cfg.tls_key]


def test_no_manifest_serves_plaintext():
    for path in [*KUBERNETES.rglob("*.yaml"), COMPOSE, CONTAINERFILE]:
        text = path.read_text(encoding="utf-8")
        assert "--insecure-plaintext" not in text, path
        assert "VAULT_INSECURE_PLAINTEXT" not in text, path
        assert "insecure_plaintext" not in text, path
        assert "--insecure" not in text.replace("--insecure-plaintext", ""), path


def test_the_image_healthcheck_and_the_readiness_probe_agree():
    _, command = healthcheck()
    args = vaultctl_args(command[1:])
    readiness = _probe_args(_vault_container()["readinessProbe"])
    assert args.service == readiness.service
    assert port_of(args.address) == port_of(readiness.address)
    assert args.tls_ca
    assert args.tls_cert
    assert args.tls_key


# -- cert-manager ---------------------------------------------------------------------------


def _certificates() -> list[dict[str, Any]]:
    return yaml_documents(CERT_MANAGER / "certificates.yaml")


def _server_certificate() -> dict[str, Any]:
    [cert] = [c for c in _certificates() if c["metadata"]["namespace"] == _server_namespace()]
    return cert


def _server_namespace() -> str:
    return str(_one("Namespace")["metadata"]["name"])


def test_the_server_certificate_names_the_service_and_the_probes_address():
    cert = _server_certificate()
    service = _one("Service")["metadata"]
    namespace = service["namespace"]
    assert cert["apiVersion"] == "cert-manager.io/v1"
    assert cert["kind"] == "Certificate"
    assert f"{service['name']}.{namespace}.svc" in cert["spec"]["dnsNames"]
    assert "localhost" in cert["spec"]["dnsNames"]
    assert "127.0.0.1" in cert["spec"]["ipAddresses"]
    # The probes present it as their client certificate.
    assert {"server auth", "client auth"} <= set(cert["spec"]["usages"])


def test_the_callers_get_client_certificates_with_spiffe_uris_from_the_same_issuer():
    certs = _certificates()
    issuers = {(c["spec"]["issuerRef"]["kind"], c["spec"]["issuerRef"]["name"]) for c in certs}
    # One issuer for all: its CA is ca.crt of the server's Secret, the vault's client_ca.
    assert issuers == {("ClusterIssuer", "payment-vault-ca")}
    clients = {ns: c for c in certs if (ns := c["metadata"]["namespace"]) != _server_namespace()}
    assert set(clients) == CALLER_NAMESPACES
    readme = (KUBERNETES.parent / "README.md").read_text(encoding="utf-8")
    for namespace, cert in clients.items():
        [uri] = cert["spec"]["uris"]
        assert uri.startswith("spiffe://")
        assert uri.endswith(f"/{namespace}")
        assert cert["spec"]["usages"] == ["digital signature", "client auth"]
        args = vaultctl_args(
            [
                "callers",
                "add",
                namespace,
                "--tenant",
                "t",
                "--scopes",
                "tokenize",
                "--cert-uri",
                uri,
            ]
        )
        assert args.cert_uri == uri
        assert f"--cert-uri {uri}" in readme, namespace
    [ca_issuer] = [
        d
        for d in yaml_documents(CERT_MANAGER / "issuer.example.yaml")
        if d["kind"] == "ClusterIssuer" and d["metadata"]["name"] == "payment-vault-ca"
    ]
    assert "ca" in ca_issuer["spec"]


def test_the_service_selects_the_pods_and_targets_their_ports():
    service = _one("Service")
    labels = _pod()["metadata"]["labels"]
    assert _selects({"matchLabels": service["spec"]["selector"]}, labels)
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(ports) == {"grpc", "metrics"}
    for name, port in ports.items():
        target = port["targetPort"]
        assert _container_port(target if isinstance(target, str) else name) == (
            _container_port(name)
        )
        assert port["port"] == _container_port(name)


def test_prometheus_annotations_name_the_metrics_port():
    annotations = _pod()["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == _container_port("metrics")
    assert annotations["prometheus.io/path"] == "/metrics"


# -- network policy -----------------------------------------------------------------------


def test_network_policy_admits_only_checkout_and_ops_to_grpc_and_monitoring_to_metrics():
    policy = _one("NetworkPolicy")["spec"]
    assert _selects(policy["podSelector"], _pod()["metadata"]["labels"])
    assert "Ingress" in policy["policyTypes"]
    admitted: dict[int, set[str]] = {}
    for rule in policy["ingress"]:
        assert rule.get("from"), "a rule without `from` admits everyone"
        assert rule.get("ports"), "a rule without `ports` admits every port"
        namespaces: set[str] = set()
        for peer in rule["from"]:
            # Namespaces only: no ipBlock, no pods of the vault's own namespace.
            assert set(peer) == {"namespaceSelector"}, peer
            selector = peer["namespaceSelector"]
            candidates = CALLER_NAMESPACES | MONITORING_NAMESPACES | {"default", "payment-vault"}
            namespaces |= {
                ns for ns in candidates if _selects(selector, {"kubernetes.io/metadata.name": ns})
            }
        for port in rule["ports"]:
            assert port.get("protocol", "TCP") == "TCP"
            admitted.setdefault(int(port["port"]), set()).update(namespaces)
    assert admitted == {
        _container_port("grpc"): CALLER_NAMESPACES,
        _container_port("metrics"): MONITORING_NAMESPACES,
    }


def test_network_policy_lets_the_vault_out_to_dns_and_postgresql_only():
    policy = _one("NetworkPolicy")["spec"]
    assert "Egress" in policy["policyTypes"]
    ports = {
        (p.get("protocol", "TCP"), int(p["port"]))
        for rule in policy["egress"]
        for p in rule["ports"]
    }
    assert ports == {("UDP", 53), ("TCP", 53), ("TCP", 5432)}


def test_the_disruption_budget_covers_the_pods_and_leaves_room_to_drain():
    deployment = _one("Deployment")["spec"]
    pdb = _one("PodDisruptionBudget")["spec"]
    assert deployment["replicas"] >= 2
    assert 1 <= pdb["minAvailable"] < deployment["replicas"]
    assert _selects(pdb["selector"], _pod()["metadata"]["labels"])
    assert _selects(deployment["selector"], _pod()["metadata"]["labels"])


# -- env, config, secrets -----------------------------------------------------------------


def test_every_vault_env_name_is_one_vaultctl_serve_reads():
    names = {e["name"] for c in _all_containers() for e in c.get("env", [])}
    vault_names = {n for n in names if n.startswith("VAULT_")}
    assert vault_names <= VAULT_ENV_NAMES, vault_names - VAULT_ENV_NAMES


def test_the_configmap_is_a_valid_config_and_no_setting_in_it_is_shadowed(tmp_path):
    import tomllib  # noqa: PLC0415 - only this test reads the TOML itself

    cfg = _deployment_config(tmp_path)
    toml = tomllib.loads(_config_toml(vaultctl_args(["serve", *_vault_container()["args"]]).config))
    env = image_env() | {e["name"]: "" for e in _vault_container()["env"]}
    for name, value in toml.items():
        # A setting the environment also sets would be dead text in the ConfigMap.
        assert f"VAULT_{name.upper()}" not in env, name
        assert getattr(cfg, name) == value, name


def test_termination_grace_covers_the_pre_stop_pause_and_the_drain(tmp_path):
    cfg = _deployment_config(tmp_path)
    pod = _pod()["spec"]
    pre_stop = _vault_container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + cfg.shutdown_grace


def test_the_master_key_comes_from_a_secret_copied_0600_into_the_data_dir(tmp_path):
    cfg = _deployment_config(tmp_path)
    pod = _pod()["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    [key_volume] = [v for v in volumes.values() if "secret" in v]
    secret = key_volume["secret"]
    assert secret["defaultMode"] in {0o400, 0o600}
    [item] = secret["items"]
    # The init container copies it, 0600 and owned by the vault's user, to the file the
    # vault reads (it refuses a key file group or others may read; fsGroup makes Secret
    # files 0440).
    [init] = [c for c in pod["initContainers"] if c["name"] == "master-key"]
    command = init["command"]
    assert command[:3] == ["install", "-m", "0600"]
    source, target = Path(command[3]), Path(command[4])
    mounts = {m["name"]: m for m in init["volumeMounts"]}
    assert source == Path(mounts[key_volume["name"]]["mountPath"]) / item["path"]
    assert mounts[key_volume["name"]]["readOnly"] is True
    assert target == cfg.master_key_path
    [data_mount] = [m for m in _vault_container()["volumeMounts"] if m["name"] == "data"]
    assert Path(data_mount["mountPath"]) == cfg.data_dir
    assert mounts["data"]["mountPath"] == data_mount["mountPath"]
    assert volumes["data"]["emptyDir"]["medium"] == "Memory"
    assert init["image"] == _vault_container()["image"]


def test_secret_references_match_the_template_which_holds_no_secret():
    template = {d["metadata"]["name"]: d for d in yaml_documents(SECRET_TEMPLATE)}
    pod = _pod()["spec"]
    referenced = {
        (v["secret"]["secretName"], item["key"])
        for v in pod["volumes"]
        if "secret" in v
        for item in v["secret"]["items"]
    } | {
        (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for c in _all_containers()
        for e in c.get("env", [])
        if "valueFrom" in e
    }
    assert referenced
    for name, key in referenced:
        assert key in template[name]["stringData"], (name, key)
    for doc in template.values():
        assert "data" not in doc, "no base64 blobs: they could hide a real value"
        for value in doc["stringData"].values():
            assert "REPLACE" in value
            assert not value.startswith("vault-kek-v1")


def test_every_container_runs_restricted_with_resource_limits():
    uid, gid = image_user()
    pod = _pod()["spec"]
    assert pod["automountServiceAccountToken"] is False
    ctx = pod["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert (ctx["runAsUser"], ctx["runAsGroup"], ctx["fsGroup"]) == (uid, gid, gid)
    assert ctx["seccompProfile"]["type"] == "RuntimeDefault"
    for container in _all_containers():
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, container["name"]
        assert sc["allowPrivilegeEscalation"] is False, container["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], container["name"]
        assert "add" not in sc["capabilities"], container["name"]
        limits = container["resources"]["limits"]
        assert {"cpu", "memory"} <= set(limits), container["name"]
