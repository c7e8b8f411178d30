"""Code the tests (and the scripts in ``hack/`` and ``bench/``) share: harnesses for the real
parts they run against, and helpers. Nothing here is a test; ``hack/`` keeps the command lines.

* ``paths`` — ``ROOT`` of the repository and the ``CHART``.
* ``parts`` — a missing real part skips a test locally and fails it under ``CI=true``.
* ``processes`` — ``free_port``, and ``LoggedProcess``: one way to start, find again and stop
  a background process whose output goes to a log file.
* ``registry`` — a real Distribution registry (``start_registry``, ``RegistryProcess``).
* ``cluster`` — a real etcd + kube-apiserver (``start_cluster``, ``Cluster``).
* ``webhook`` — a real ``imagegate serve`` (``start_webhook``, ``WebhookServer``).
* ``tools`` — the pinned ``helm`` (``find_helm``, ``require_helm``).
* ``manifests`` — Kubernetes objects as a user writes them.
* ``kube`` — ``fresh_namespace`` for any cluster reached with kubectl.
* ``summary`` — lines printed in a section of pytest's terminal summary.
"""
