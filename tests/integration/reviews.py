"""AdmissionReviews shaped exactly as the API server sends them (admission.k8s.io/v1).

Field layout from the Kubernetes API reference (AdmissionReview, AdmissionRequest) and the
objects as they look after defaulting: every workload kind the webhook admits.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import Any

Spec = dict[str, Any]


def _template(name: str, spec: Spec) -> dict[str, Any]:
    return {
        "metadata": {"creationTimestamp": None, "labels": {"app": name}},
        "spec": spec,
    }


def _controller(name: str, spec: Spec) -> dict[str, Any]:
    return {
        "replicas": 1,
        "selector": {"matchLabels": {"app": name}},
        "template": _template(name, spec),
    }


BUILDERS: dict[str, tuple[str, str, str, Callable[[str, Spec], dict[str, Any]]]] = {
    "Pod": ("", "v1", "pods", lambda name, spec: spec),
    "Deployment": ("apps", "v1", "deployments", _controller),
    "ReplicaSet": ("apps", "v1", "replicasets", _controller),
    "StatefulSet": (
        "apps", "v1", "statefulsets",
        lambda name, spec: {**_controller(name, spec), "serviceName": name},
    ),
    "DaemonSet": (
        "apps", "v1", "daemonsets",
        lambda name, spec: {k: v for k, v in _controller(name, spec).items() if k != "replicas"},
    ),
    "Job": (
        "batch", "v1", "jobs",
        lambda name, spec: {
            "backoffLimit": 6,
            "template": _template(name, {**spec, "restartPolicy": "Never"}),
        },
    ),
    "CronJob": (
        "batch", "v1", "cronjobs",
        lambda name, spec: {
            "schedule": "*/5 * * * *",
            "concurrencyPolicy": "Allow",
            "jobTemplate": {
                "metadata": {"creationTimestamp": None},
                "spec": {"template": _template(name, {**spec, "restartPolicy": "OnFailure"})},
            },
        },
    ),
    "ReplicationController": (
        "", "v1", "replicationcontrollers",
        lambda name, spec: {
            "replicas": 1,
            "selector": {"app": name},
            "template": _template(name, spec),
        },
    ),
}  # fmt: skip


def container(name: str, image: str, **extra: Any) -> dict[str, Any]:
    """A container as defaulting leaves it."""
    return {
        "name": name,
        "image": image,
        "resources": {},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
        **extra,
    }


def pod_spec(*containers: dict[str, Any], **extra: Any) -> Spec:
    return {
        "containers": list(containers),
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "securityContext": {},
        "schedulerName": "default-scheduler",
        **extra,
    }


def workload(kind: str, name: str, namespace: str, spec: Spec) -> dict[str, Any]:
    group, version, _, build = BUILDERS[kind]
    return {
        "apiVersion": f"{group}/{version}" if group else version,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": None,
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
        },
        "spec": build(name, spec),
        **({"status": {}} if kind != "CronJob" else {}),
    }


def review(
    kind: str,
    spec: Spec,
    *,
    namespace: str = "prod",
    name: str = "web",
    operation: str = "CREATE",
    old_spec: Spec | None = None,
    dry_run: bool = False,
    uid: str | None = None,
) -> dict[str, Any]:
    group, version, resource, _ = BUILDERS[kind]
    gvk = {"group": group, "version": version, "kind": kind}
    gvr = {"group": group, "version": version, "resource": resource}
    options_kind = "CreateOptions" if operation == "CREATE" else "UpdateOptions"
    return {
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": name,
            "namespace": namespace,
            "operation": operation,
            "userInfo": {
                "username": "kubernetes-admin",
                "groups": ["system:masters", "system:authenticated"],
            },
            "object": workload(kind, name, namespace, copy.deepcopy(spec)),
            "oldObject": workload(kind, name, namespace, old_spec) if old_spec else None,
            "dryRun": dry_run,
            "options": {
                "kind": options_kind,
                "apiVersion": "meta.k8s.io/v1",
                "fieldManager": "kubectl-client-side-apply",
            },
        },
    }


def realistic_pod_review(image: str, namespace: str = "shop") -> dict[str, Any]:
    """The review of a Pod as a ReplicaSet creates it, after defaulting: owner reference,
    service account token volume, tolerations, probes, resources — what a webhook sees most."""
    app = container(
        "web",
        image,
        ports=[{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        env=[{"name": "LOG_LEVEL", "value": "info"}, {"name": "PORT", "value": "8080"}],
        resources={"limits": {"memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
        readinessProbe={
            "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
            "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3,
        },
        volumeMounts=[{
            "name": "kube-api-access-8xk2d", "readOnly": True,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
        }],
        securityContext={"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    )  # fmt: skip
    spec = pod_spec(
        app,
        volumes=[{
            "name": "kube-api-access-8xk2d",
            "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt",
                               "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                                            "fieldRef": {"apiVersion": "v1",
                                                         "fieldPath": "metadata.namespace"}}]}},
            ]},
        }],
        serviceAccountName="default",
        serviceAccount="default",
        enableServiceLinks=True,
        preemptionPolicy="PreemptLowerPriority",
        priority=0,
        tolerations=[
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
             "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
             "effect": "NoExecute", "tolerationSeconds": 300},
        ],
    )  # fmt: skip
    body = review("Pod", spec, namespace=namespace, name="")
    body["request"]["object"]["metadata"] = {
        "generateName": "web-7d9c5b8f6d-",
        "namespace": namespace,
        "creationTimestamp": None,
        "labels": {"app": "web", "pod-template-hash": "7d9c5b8f6d"},
        "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9c5b8f6d",
            "uid": "5f1c2a4e-8a0b-4a55-9d0e-3c5b6f7a8b9c", "controller": True,
            "blockOwnerDeletion": True,
        }],
    }  # fmt: skip
    body["request"]["userInfo"] = {
        "username": "system:serviceaccount:kube-system:replicaset-controller",
        "uid": "0b5e8f6a-2d4c-4e1f-9a3b-7c6d5e4f3a2b",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system",
                   "system:authenticated"],
    }  # fmt: skip
    return body
