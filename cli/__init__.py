"""The retrdistill command line (Typer): parses arguments and calls the library."""
