"""The operator: kopf handlers (thin) and the services they call.

* `scan` — the background audit: every running workload's images checked against the
  ImagePolicies, results written as PolicyReports, Events on workloads with violations;
* the ImageRebuild and policy-watch handlers call `webhook.rebuild` and `scan`.
"""
