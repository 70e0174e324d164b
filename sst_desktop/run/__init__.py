"""Running: the group loop shared by the CLI and the app, background jobs, progress reporting."""
