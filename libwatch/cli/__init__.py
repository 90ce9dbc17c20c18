"""The command line (Typer)."""
from libwatch.cli import stopsignal

# Before Typer, rich and the catalog are imported: a SIGTERM in a worker's first instant stops it cleanly.
stopsignal.install_early()
