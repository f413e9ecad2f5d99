"""Browser tests: every notebook run in a real JupyterLab in headless Chromium."""
