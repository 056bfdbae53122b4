"""Text search over imagery archives: tile, embed, index (faiss), query, serve.

* :func:`~terrascribe.search.index.build_index` / :func:`~terrascribe.search.index.add_to_index`
  cut GeoTIFFs, XYZ folders or datasets into tiles and index their embeddings;
* :func:`~terrascribe.search.query.search` finds tiles by text, example image or place;
* :mod:`terrascribe.search.service` serves an index over HTTP with a small map page.
"""
