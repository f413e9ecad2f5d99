"""Notebook widgets: thin ipywidgets views over pure state objects (the *_state modules)."""
