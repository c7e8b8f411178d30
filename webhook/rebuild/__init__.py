"""Daemonless rebuilds of non-compliant images into compliant, immutable replacements."""
