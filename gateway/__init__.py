"""contactgate core: config, domain model, pipeline, store, agent hub, HTTP app and CLI."""
