"""Reading the world: OSM objects (:mod:`.osm`, :mod:`.overpass`), imagery (:mod:`.imagery`),
annotations, caption sets and web pages. Modules are imported on demand (no heavy imports here).
"""
