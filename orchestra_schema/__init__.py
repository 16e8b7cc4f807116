"""orchestra-schema: paired SQL migrations for the Orchestra API's orchestra.db."""

__version__ = "0.1.0"
