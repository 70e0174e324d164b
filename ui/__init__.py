"""Web UI assets, served by the bottle app and pywebview."""
