"""Demo model repositories generated in code: nothing is downloaded."""
