"""deploy.cli."""
