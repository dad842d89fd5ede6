"""The shipped configs, installed as the package data `gic.configs` (see pyproject.toml).

This folder stays at the top of the repository; pyproject.toml maps it into the `gic` package so
that a wheel carries it. Code reads it through `gic.shipped`, never by importing this module.
"""
