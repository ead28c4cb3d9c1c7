"""Small helpers every layer needs (stopping tasks, reading config files, child processes that die with their
parent), written once.

Below every layer: ``wire``, ``devices``, ``edge``, ``hub``, ``dashboards`` and ``ioc`` may import it, and it
imports nothing of the project's (``tests/unit/test_layering.py``). Only the standard library and the packages
every install has (PyYAML) are imported here, so an edge agent pays nothing for what only the hub uses.
"""
