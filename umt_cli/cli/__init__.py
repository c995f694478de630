"""The Typer command line. Modules here import only typer, pathlib and umt_cli.recipe at top level."""
