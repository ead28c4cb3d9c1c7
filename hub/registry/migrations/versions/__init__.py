"""The revisions of the hub database, one module each (``rNNNN_<slug>.py``, revision id ``NNNN``)."""
