"""The operations API, one module per resource: sites, devices, alerts, commands, inventory, tokens,
live events; ``deps`` holds authentication and ward filtering, ``services`` composes what they use."""
