"""What the tests share and import: fakes, process helpers, WebSocket and HTTP helpers.

Imported, never collected: no module here is named ``test_*`` (and pyproject.toml keeps pytest
out of this folder), and no fixture lives here (fixtures are in the conftest.py files).
"""
