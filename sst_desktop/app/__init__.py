"""Application layer: the JS API, the local HTTP server, the pywebview window and the mask viewer."""
