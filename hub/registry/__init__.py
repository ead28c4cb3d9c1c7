"""The device registry: sites and devices, from gateway births and the technicians' inventory file."""
