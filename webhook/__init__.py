"""imagegate: gate container images at Kubernetes admission."""

__version__ = "0.1.0"
