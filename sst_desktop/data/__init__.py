"""Data layer (no torch): the CSV table, project spec and registry, images, ID masks, review flags."""
