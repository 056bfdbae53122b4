"""Curation of terrascribe datasets: CLIP-score filtering, perceptual de-duplication, benchmark
contamination checks, leak-free splits and weighted merges.

One module per job (:mod:`~terrascribe.curate.score`, :mod:`~terrascribe.curate.filter`,
:mod:`~terrascribe.curate.dedup`, :mod:`~terrascribe.curate.contamination`,
:mod:`~terrascribe.curate.split`, :mod:`~terrascribe.curate.merge`); each reads a dataset and
writes a new one or a manifest view (:mod:`~terrascribe.curate.views`). Submodules are imported
on use, so ``import terrascribe.curate`` stays cheap.
"""
