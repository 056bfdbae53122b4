"""Turning facts into words: OSM tags, boxes and LLM captions."""
