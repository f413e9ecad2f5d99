"""lessonlib: the code behind the Decoding course (sampling, models, generation, widgets)."""

__version__ = "0.1.0"
