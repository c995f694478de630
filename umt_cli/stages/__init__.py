"""Training stages: one file each, read top to bottom as setup -> step -> run."""
