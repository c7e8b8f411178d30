"""Registry credentials of a workload: what the kubelet would pull its images with."""

from __future__ import annotations

import logging

from webhook.errors import ImagegateError
from webhook.k8s.cluster import ClusterReader
from webhook.policy.workloads import PodTemplate
from webhook.registry.auth import Keyring

log = logging.getLogger(__name__)


async def pull_keyring(
    cluster: ClusterReader, namespace: str, template: PodTemplate, base: Keyring
) -> Keyring:
    """The pod's `imagePullSecrets`, then its ServiceAccount's, then `base` (our own config).

    Ignoring these is the top complaint about tools like this one: a private image must be
    inspected with the same credentials that will pull it.
    """
    names = await pull_secret_names(cluster, namespace, template)
    secrets = await cluster.pull_secrets(namespace, names)
    keyring = base
    for secret in reversed(secrets):
        source = f"pull secret {secret.namespace}/{secret.name}"
        keyring = Keyring.from_dockerconfigjson(secret.payload, source=source).merged(keyring)
    return keyring


async def pull_secret_names(
    cluster: ClusterReader, namespace: str, template: PodTemplate
) -> list[str]:
    """The names the kubelet would try, in its order: the pod's own, then its ServiceAccount's."""
    names = list(template.pull_secret_names)
    try:
        names += await cluster.service_account_pull_secret_names(
            namespace, template.service_account
        )
    except ImagegateError as err:  # the pod's own secrets still count
        log.warning("service account pull secrets unavailable", extra={"error": str(err)})
    return list(dict.fromkeys(names))
