"""The benchmark (``nox -s bench``, ``python bench/run.py``) and the soak (``nox -s soak``,
``python -m bench.soak``): load tools, not tests."""
