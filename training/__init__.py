"""retention: training package."""
