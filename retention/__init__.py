"""The ``retention`` command-line entry point (``python -m retention``)."""
