"""The database is a shared contract: typed models and the engine factory."""
