"""The ``rs-search`` command line: thin typer modules, one per command group."""
