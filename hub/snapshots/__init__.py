"""Camera snapshots on the hub: the JPEG check (``jpeg.py``), what a gateway may send (``intake.py``), the
folder they are kept in with its retention (``store.py``). The API is hub/routes/cameras.py."""
