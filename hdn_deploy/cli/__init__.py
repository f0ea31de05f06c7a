"""The ``hdn-deploy`` command line. Each subcommand lives in its own module and
imports heavy dependencies (torch, onnx) only when it runs."""
from .main import main

__all__ = ["main"]
