"""Ember: a Spark-standalone-style cluster runtime and the toolkit that deploys it."""

__version__ = "0.1.0"
