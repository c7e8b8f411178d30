"""A real Kubernetes control plane for end-to-end tests: etcd + kube-apiserver on loopback.

The same pair controller-runtime's envtest runs, started from the binaries
``hack/build-tools.sh`` builds (pinned in ``hack/tools/go.mod``)::

    cluster = start_cluster(state_dir)     # free loopback ports, waits for /readyz
    cluster.kubeconfig                     # admin kubeconfig (client cert in system:masters)
    cluster.server                         # "https://127.0.0.1:PORT"
    cluster.ca_path                        # CA of the serving and client certificates
    cluster.log_dir                        # etcd.log, kube-apiserver.log
    cluster.start_seconds                  # how long the start took
    cluster.kubectl("get", "ns")           # kubectl as admin (CompletedProcess, text)
    sa = cluster.serviceaccount_kubeconfig("ns", "name")   # a token kubeconfig for that SA
    cluster.stop()

A cluster started with ``detach()`` keeps running after this Python process exits;
``load_cluster`` finds it again from its state directory. That is what the command line
(``hack/cluster.py``, ``make cluster-up``) does::

    python hack/cluster.py up [--state DIR]       # prints `export KUBECONFIG=...`
    python hack/cluster.py status [--state DIR]
    python hack/cluster.py down [--state DIR]

STATE defaults to ``$IMAGEGATE_STATE/cluster`` (``/tmp/imagegate/cluster``).

What the API server runs with, and why:

* ``--authorization-mode=RBAC`` (no Node authorizer: there are no kubelets);
* TLS serving certificate for 127.0.0.1/localhost/::1 and a ``--client-ca-file`` CA; the admin
  kubeconfig authenticates with a client certificate in group ``system:masters``;
* a service-account key pair (``--service-account-key-file``/``-signing-key-file``) and
  ``--service-account-issuer``: the TokenRequest API (``kubectl create token``) works;
* admission: ValidatingAdmissionWebhook, MutatingAdmissionWebhook (and the other defaults);
  ``ServiceAccount`` is disabled, as envtest does: no kube-controller-manager runs, so no
  namespace gets its ``default`` ServiceAccount, and that plugin would refuse every Pod
  ("error looking up service account <ns>/default"). The consequence for tests: Pods are not
  given ``serviceAccountName: default``, a token volume, or their ServiceAccount's
  ``imagePullSecrets`` at admission.
* Without a controller-manager nothing else reconciles either: Deployments make no ReplicaSets,
  deleted namespaces stay ``Terminating`` (delete them with ``--wait=false`` or not at all),
  owner references are not garbage-collected. No kubelet: Pods are stored, never run.

etcd listens on plain HTTP on 127.0.0.1 (a loopback-only test store, as in envtest) and runs
with ``--unsafe-no-fsync`` (its data dir is thrown away).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.paths import ROOT
from tests.support.processes import LoggedProcess, free_port, spawn

__all__ = [
    "STATE_FILE",
    "Binaries",
    "BinaryNotFoundError",
    "Cluster",
    "ClusterError",
    "default_state",
    "find_binaries",
    "find_binary",
    "issue_cert",
    "load_cluster",
    "make_ca",
    "start_cluster",
]

BUILD_SCRIPT = ROOT / "hack" / "build-tools.sh"
BUILD_HINT = "build it with `hack/build-tools.sh` (`make tools`)"

STATE_FILE = "cluster.json"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "imagegate-admin"
READY_TIMEOUT = 90.0


class ClusterError(RuntimeError):
    """The control plane could not be started, reached or stopped as asked."""


class BinaryNotFoundError(ClusterError):
    """kube-apiserver, etcd or kubectl is missing (the message says which script builds it)."""


# --------------------------------------------------------------------------------------------
# Binaries


@dataclass(frozen=True)
class Binaries:
    """Paths of the executables the harness runs."""

    kube_apiserver: Path
    etcd: Path
    kubectl: Path


def _tools_dirs() -> list[tuple[str, Path]]:
    """Where the binaries may be, most explicit first, each with how it was chosen."""
    dirs: list[tuple[str, Path]] = []
    if explicit := os.environ.get("IMAGEGATE_TOOLS_BIN"):
        dirs.append(("IMAGEGATE_TOOLS_BIN", Path(explicit)))
    if assets := os.environ.get("KUBEBUILDER_ASSETS"):
        dirs.append(("KUBEBUILDER_ASSETS", Path(assets)))
    if BUILD_SCRIPT.exists():
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(
                ["bash", str(BUILD_SCRIPT), "--print-dir"],
                check=True,
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
            if out:
                dirs.append(("hack/build-tools.sh cache", Path(out)))
    return dirs


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_binary(name: str, *, path_fallback: bool = False) -> Path:
    """``name`` from ``$IMAGEGATE_TOOLS_BIN``, ``$KUBEBUILDER_ASSETS``, the build cache (and
    ``PATH`` when ``path_fallback``); ``BinaryNotFoundError`` naming what was searched."""
    searched: list[str] = []
    for how, directory in _tools_dirs():
        candidate = directory / name
        if _executable(candidate):
            return candidate
        searched.append(f"{how} ({directory})")
    if path_fallback:
        found = shutil.which(name)
        if found:
            return Path(found)
        searched.append("PATH")
    raise BinaryNotFoundError(
        f"{name} not found in {', '.join(searched) or 'nowhere'}: {BUILD_HINT}"
    )


def find_binaries() -> Binaries:
    """The binaries of the control plane (see ``find_binary``); kubectl may also come from PATH."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        try:
            kubectl_path = find_binary("kubectl")
        except BinaryNotFoundError as e:
            raise BinaryNotFoundError(
                "kubectl not found on PATH (install Debian's kubernetes-client or put it on PATH)"
            ) from e
    else:
        kubectl_path = Path(kubectl)
    return Binaries(
        kube_apiserver=find_binary("kube-apiserver"),
        etcd=find_binary("etcd"),
        kubectl=kubectl_path,
    )


# --------------------------------------------------------------------------------------------
# Certificates and keys


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA (key, certificate) valid for a day."""
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue_cert(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    *,
    organizations: Sequence[str] = (),
    hosts: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A leaf certificate signed by the CA: ``hosts`` (DNS names or IPs) go to the SAN."""
    key = _new_key()
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if hosts:
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


@dataclass(frozen=True)
class _Pki:
    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path


def _make_pki(pki: Path) -> _Pki:
    pki.mkdir(parents=True, exist_ok=True)
    paths = _Pki(
        ca_cert=pki / "ca.crt",
        serving_cert=pki / "apiserver.crt",
        serving_key=pki / "apiserver.key",
        admin_cert=pki / "admin.crt",
        admin_key=pki / "admin.key",
        sa_key=pki / "sa.key",
        sa_pub=pki / "sa.pub",
    )
    ca_key, ca_cert = make_ca("imagegate-e2e-ca")
    _write_cert(paths.ca_cert, ca_cert)
    _write_key(pki / "ca.key", ca_key)
    key, cert = issue_cert(
        ca_key,
        ca_cert,
        "kube-apiserver",
        hosts=["127.0.0.1", "::1", "localhost", "kubernetes", "kubernetes.default.svc"],
        server=True,
    )
    _write_cert(paths.serving_cert, cert)
    _write_key(paths.serving_key, key)
    key, cert = issue_cert(
        ca_key, ca_cert, ADMIN_USER, organizations=["system:masters"], client=True
    )
    _write_cert(paths.admin_cert, cert)
    _write_key(paths.admin_key, key)
    sa_key = _new_key()
    _write_key(paths.sa_key, sa_key)
    paths.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return paths


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_path: Path,
    user: str,
    credentials: Mapping[str, str],
    namespace: str = "default",
) -> Path:
    """A one-context kubeconfig (``credentials``: client-certificate/-key paths or a token)."""
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "imagegate-e2e",
                "cluster": {"server": server, "certificate-authority": str(ca_path)},
            }
        ],
        "users": [{"name": user, "user": dict(credentials)}],
        "contexts": [
            {
                "name": "imagegate-e2e",
                "context": {"cluster": "imagegate-e2e", "user": user, "namespace": namespace},
            }
        ],
        "current-context": "imagegate-e2e",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


# --------------------------------------------------------------------------------------------
# Processes


def _child_env() -> dict[str, str]:
    """The environment of etcd/kube-apiserver: loopback never goes through a proxy (the API
    server calls webhooks in ``url`` mode on 127.0.0.1 with Go's proxy-aware HTTP client)."""
    env = dict(os.environ)
    no_proxy = [p for p in env.get("NO_PROXY", env.get("no_proxy", "")).split(",") if p]
    for host in ("127.0.0.1", "localhost", "::1"):
        if host not in no_proxy:
            no_proxy.append(host)
    env["NO_PROXY"] = env["no_proxy"] = ",".join(no_proxy)
    return env


def _spawn(name: str, argv: list[str], state: Path, env: Mapping[str, str]) -> LoggedProcess:
    """Start one of the cluster's processes; its command line names ``state`` (the marker that
    finds it again by pid), its log is ``state/logs/<name>.log``."""
    try:
        return spawn(name, argv, state / "logs" / f"{name}.log", env=env, marker=str(state))
    except OSError as e:
        raise ClusterError(f"cannot run {argv[0]}: {e}") from e


def _check_running(proc: LoggedProcess) -> None:
    code = proc.exit_code()
    if code is not None:
        raise ClusterError(
            f"{proc.name} exited with status {code}; log {proc.log_path}:\n{proc.log_tail()}"
        )


def _wait_until(
    what: str,
    proc: LoggedProcess,
    probe: Callable[[], tuple[bool, str]],
    timeout: float,
    *,
    interval: float = 0.1,
) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        _check_running(proc)
        ok, last = probe()
        if ok:
            return
        if time.monotonic() >= deadline:
            raise ClusterError(
                f"{what} not ready after {timeout:.0f}s (last: {last}); "
                f"log {proc.log_path}:\n{proc.log_tail()}"
            )
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# The cluster


@dataclass
class Cluster:
    """A running etcd + kube-apiserver. ``stop()`` ends both; also a context manager."""

    state_dir: Path
    server: str
    kubeconfig: Path
    ca_path: Path
    log_dir: Path
    etcd_url: str
    binaries: Binaries
    start_seconds: float = 0.0
    _procs: list[LoggedProcess] = field(default_factory=list, repr=False)

    # ---- talking to it

    @property
    def port(self) -> int:
        return int(self.server.rsplit(":", 1)[1])

    def env(self, kubeconfig: Path | None = None) -> dict[str, str]:
        """``os.environ`` with ``KUBECONFIG`` set (the admin kubeconfig by default)."""
        env = _child_env()
        env["KUBECONFIG"] = str(kubeconfig or self.kubeconfig)
        return env

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl (as admin unless ``kubeconfig``); ``check`` raises ``ClusterError``
        with stderr on a non-zero exit."""
        argv = [str(self.binaries.kubectl), *args]
        result = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            env=self.env(kubeconfig),
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise ClusterError(
                f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def serviceaccount_kubeconfig(self, namespace: str, name: str, *, duration: str = "2h") -> Path:
        """Create (if missing) namespace and ServiceAccount, get a token for it with the
        TokenRequest API (``kubectl create token``) and write a kubeconfig that uses it.

        The ServiceAccount has no permissions until a (Cluster)RoleBinding grants some; use the
        kubeconfig to prove an RBAC manifest (``system:serviceaccount:<namespace>:<name>``).
        """
        self._create_if_missing("namespace", namespace)
        self._create_if_missing("serviceaccount", name, "-n", namespace)
        token = self.kubectl(
            "create", "token", name, "-n", namespace, f"--duration={duration}"
        ).stdout.strip()
        if not token:
            raise ClusterError(f"kubectl create token {namespace}/{name} returned no token")
        sa_dir = self.state_dir / "serviceaccounts"
        sa_dir.mkdir(exist_ok=True)
        return write_kubeconfig(
            sa_dir / f"{namespace}.{name}.kubeconfig",
            server=self.server,
            ca_path=self.ca_path,
            user=f"system:serviceaccount:{namespace}:{name}",
            credentials={"token": token},
            namespace=namespace,
        )

    def _create_if_missing(self, kind: str, name: str, *extra: str) -> None:
        result = self.kubectl("create", kind, name, *extra, check=False)
        if result.returncode != 0 and "already exists" not in result.stderr.lower().replace(
            "alreadyexists", "already exists"
        ):
            raise ClusterError(f"kubectl create {kind} {name}: {result.stderr.strip()}")

    def readyz(self, timeout: float = 2.0) -> tuple[bool, str]:
        """``GET /readyz`` as admin: (ready, what was seen)."""
        return _https_get(self, "/readyz", timeout)

    def alive(self) -> bool:
        return all(p.alive() for p in self._procs)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(f"==> {p.log_path} <==\n{p.log_tail(lines)}" for p in self._procs)

    # ---- lifecycle

    def detach(self) -> Cluster:
        """Leave the processes running after this Python process exits (``stop()`` still
        works, by pid: see ``load_cluster``)."""
        for proc in self._procs:
            proc.detach()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop kube-apiserver, then etcd (SIGTERM, SIGKILL after ``timeout``). Idempotent."""
        for proc in reversed(self._procs):
            proc.stop(timeout)
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / STATE_FILE).unlink()
        for proc in self._procs:
            with contextlib.suppress(FileNotFoundError):
                (self.state_dir / f"{proc.name}.pid").unlink()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _save(self) -> None:
        for proc in self._procs:
            (self.state_dir / f"{proc.name}.pid").write_text(f"{proc.pid}\n")
        state = {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "ca_path": str(self.ca_path),
            "log_dir": str(self.log_dir),
            "etcd_url": self.etcd_url,
            "start_seconds": self.start_seconds,
            "binaries": {
                "kube_apiserver": str(self.binaries.kube_apiserver),
                "etcd": str(self.binaries.etcd),
                "kubectl": str(self.binaries.kubectl),
            },
            "processes": [
                {"name": p.name, "pid": p.pid, "log": str(p.log_path)} for p in self._procs
            ],
        }
        (self.state_dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")


def _ssl_context(cluster: Cluster) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cluster.ca_path))
    pki = cluster.state_dir / "pki"
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return ctx


def _https_get(cluster: Cluster, path: str, timeout: float) -> tuple[bool, str]:
    request = urllib.request.Request(cluster.server + path)
    # The probes talk to 127.0.0.1 directly, never through an HTTP(S)_PROXY of the environment.
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        urllib.request.HTTPSHandler(context=_ssl_context(cluster)),
    )
    try:
        with opener.open(request, timeout=timeout) as resp:
            body = resp.read().decode(errors="replace")
            return int(resp.status) == 200, body.strip()[:200]
    except urllib.error.HTTPError as e:
        return False, f"HTTP {e.code}: {e.read().decode(errors='replace').strip()[-400:]}"
    except (urllib.error.URLError, OSError) as e:
        return False, str(e)


def _etcd_healthy(url: str) -> tuple[bool, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/health", timeout=1.0) as resp:
            body = resp.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as e:
        return False, str(e)
    try:
        return json.loads(body).get("health") == "true", body.strip()
    except ValueError:
        return False, body.strip()[:200]


def _etcd_argv(binary: Path, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    return [
        str(binary),
        "--name=imagegate-e2e",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=imagegate-e2e={peer}",
        "--initial-cluster-state=new",
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def _apiserver_argv(binary: Path, state: Path, pki: _Pki, etcd_url: str, port: int) -> list[str]:
    return [
        str(binary),
        f"--etcd-servers={etcd_url}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={state / 'apiserver-certs'}",
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.ca_cert}",
        "--authorization-mode=RBAC",
        "--anonymous-auth=true",  # /readyz, /livez, /version stay readable as in a real cluster
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
        "--disable-admission-plugins=ServiceAccount",
        "--allow-privileged=true",
        "--profiling=false",
        "--v=1",
    ]


def start_cluster(
    state_dir: str | os.PathLike[str],
    *,
    binaries: Binaries | None = None,
    timeout: float = READY_TIMEOUT,
) -> Cluster:
    """Start etcd and kube-apiserver on free loopback ports, state (PKI, data, logs,
    kubeconfigs) under ``state_dir``; return once ``/readyz`` is 200 and namespace ``default``
    exists. Raises ``BinaryNotFoundError`` (what is missing, and which script builds it) or
    ``ClusterError`` (with the log tail)."""
    started = time.monotonic()
    bins = binaries or find_binaries()
    state = Path(state_dir).resolve()
    if (state / STATE_FILE).exists():
        existing = load_cluster(state)
        if existing.alive():
            raise ClusterError(f"a cluster is already running from {state} ({existing.server})")
        existing.stop()
    state.mkdir(parents=True, exist_ok=True)
    log_dir = state / "logs"
    log_dir.mkdir(exist_ok=True)
    data_dir = state / "etcd-data"
    shutil.rmtree(data_dir, ignore_errors=True)
    pki = _make_pki(state / "pki")
    env = _child_env()

    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    server = f"https://127.0.0.1:{api_port}"
    kubeconfig = write_kubeconfig(
        state / "admin.kubeconfig",
        server=server,
        ca_path=pki.ca_cert,
        user=ADMIN_USER,
        credentials={
            "client-certificate": str(pki.admin_cert),
            "client-key": str(pki.admin_key),
        },
    )
    cluster = Cluster(state, server, kubeconfig, pki.ca_cert, log_dir, etcd_url, bins)
    try:
        etcd = _spawn("etcd", _etcd_argv(bins.etcd, data_dir, etcd_port, peer_port), state, env)
        cluster._procs.append(etcd)
        _wait_until("etcd", etcd, lambda: _etcd_healthy(etcd_url), timeout)
        apiserver = _spawn(
            "kube-apiserver",
            _apiserver_argv(bins.kube_apiserver, state, pki, etcd_url, api_port),
            state,
            env,
        )
        cluster._procs.append(apiserver)
        _wait_until("kube-apiserver /readyz", apiserver, cluster.readyz, timeout, interval=0.2)
        # The system-namespaces controller creates `default` just after readiness.
        _wait_until(
            "namespace default",
            apiserver,
            lambda: _https_get(cluster, "/api/v1/namespaces/default", 2.0),
            timeout,
        )
    except BaseException:
        cluster.stop()
        raise
    cluster.start_seconds = time.monotonic() - started
    cluster._save()
    return cluster


def load_cluster(state_dir: str | os.PathLike[str]) -> Cluster:
    """The cluster recorded in ``state_dir`` by ``start_cluster`` (for ``status``/``down``)."""
    state = Path(state_dir).resolve()
    try:
        data = json.loads((state / STATE_FILE).read_text())
    except FileNotFoundError as e:
        raise ClusterError(f"no cluster recorded in {state} ({STATE_FILE} missing)") from e
    bins = data["binaries"]
    return Cluster(
        state_dir=state,
        server=data["server"],
        kubeconfig=Path(data["kubeconfig"]),
        ca_path=Path(data["ca_path"]),
        log_dir=Path(data["log_dir"]),
        etcd_url=data["etcd_url"],
        binaries=Binaries(
            kube_apiserver=Path(bins["kube_apiserver"]),
            etcd=Path(bins["etcd"]),
            kubectl=Path(bins["kubectl"]),
        ),
        start_seconds=float(data.get("start_seconds", 0.0)),
        _procs=[
            LoggedProcess(p["name"], int(p["pid"]), Path(p["log"]), marker=str(state))
            for p in data["processes"]
        ],
    )


def default_state() -> Path:
    """``$IMAGEGATE_STATE/cluster`` (``/tmp/imagegate/cluster``)."""
    return Path(os.environ.get("IMAGEGATE_STATE", "/tmp/imagegate")) / "cluster"
