"""deploy.report.page."""
