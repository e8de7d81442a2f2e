"""Deprecated: the transports moved to :mod:`streammix.scoring` (``http``, ``redis``)."""
