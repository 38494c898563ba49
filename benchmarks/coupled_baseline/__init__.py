"""The seed's coupled architecture: every Gunicorn worker loads its own copy of the model."""
