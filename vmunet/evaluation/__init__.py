"""Evaluation: segmentation metrics and their named conventions.

Sits below both ``training`` and ``inference`` (validation, ``vmunet test`` and
``vmunet predict --reference`` share one implementation). Needs neither Lightning nor a GPU.
"""
