"""Results for people and for the ecosystem: PolicyReports, tables, JSON, Markdown, HTML."""
