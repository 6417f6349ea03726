"""retention: serving package."""
