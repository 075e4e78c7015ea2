"""The handler test kit: real handlers over an in-memory workflow hash (``handler_kit``)."""
