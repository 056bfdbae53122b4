"""Dataset builders: one module per construction method (``osm``, ``annotations``, ``llm``...).

Each builder turns its inputs into jobs and writes a standard terrascribe dataset with
:func:`terrascribe.shards.write_dataset`. Modules are imported on demand.
"""
