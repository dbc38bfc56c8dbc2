"""python -m dcnn: the dcnn command."""
import sys

from .cli import main

sys.exit(main())
