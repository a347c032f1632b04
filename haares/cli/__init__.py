"""The Typer command-line app: thin commands over plain functions (see app.py)."""
