"""The ``dcnn`` command line, a thin layer over the library (nothing in the library imports it).

``main`` parses (``parser``) and runs one command: ``train`` (``train_command``), ``evaluate``,
``predict``, ``export``, ``info`` (``model_commands``) and ``visualize`` (``visualize``).
"""
from .common import EXIT_BROKEN_PIPE, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE
from .main import main

__all__ = ["EXIT_BROKEN_PIPE", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_USAGE", "main"]
