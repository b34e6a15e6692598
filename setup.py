"""Package discovery, which pyproject.toml's find directive cannot express here: every package under
retrdistill/, plus the top-level cli/ folder installed as retrdistill.cli (pyproject.toml maps the folder)."""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["retrdistill", "retrdistill.*"]) + ["retrdistill.cli"])
