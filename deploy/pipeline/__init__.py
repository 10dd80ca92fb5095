"""deploy.pipeline.runner."""
