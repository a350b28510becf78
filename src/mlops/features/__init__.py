"""Feature store: Feast wrapper, catalog, statistics, versions, datasets."""
