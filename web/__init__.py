"""The Tornado adapter: pages, the JSON API and /ws over the core in `notifier/`.

A package, so that it installs with its templates and `static/` (package data, see
setup.cfg); `python -m web` runs it.
"""
