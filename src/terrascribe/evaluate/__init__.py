"""Evaluation of RS vision-language models: benchmark registry, metrics, runner and report.

- :mod:`terrascribe.evaluate.metrics`: pure functions on numpy arrays (zero-shot, retrieval, k-NN,
  linear probe, few-shot, counting, caption metrics); they can score published embeddings too.
- :mod:`terrascribe.evaluate.benchmarks`: the registry of RS benchmarks (class names, templates,
  layouts, splits, licences, download sources) and the loaders that turn a folder into arrays.
- :mod:`terrascribe.evaluate.runner`: embeds with a model (cached), scores, writes one result JSON
  per (model, benchmark, task).
- :mod:`terrascribe.evaluate.report`: merges result JSONs into a leaderboard and plots.
"""
