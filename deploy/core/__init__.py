"""deploy.core."""
