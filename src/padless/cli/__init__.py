"""The ``padless`` command line (typer). Entry point: :func:`padless.cli.main.main`."""
