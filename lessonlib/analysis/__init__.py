"""Helpers that compute what the lessons measure, one module per topic."""
