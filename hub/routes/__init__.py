"""The operations API, one module per resource: sites, devices, alerts, commands, inventory, tokens, cameras,
reports, KPIs, live events; ``deps`` holds authentication and ward filtering, ``models`` the answers' public models.
What the routes read is the operations side (:class:`hub.operations.operations.Operations`) and the domain
packages, never the intake, the pipeline or the writers (``tests/unit/test_layering.py``)."""
