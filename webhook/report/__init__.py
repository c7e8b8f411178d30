"""Rendering results for people and machines: tables, JSON (PolicyReports come later)."""
