"""``python -m llm``: see llm/cli.py."""
import sys

from llm.cli import main

sys.exit(main())
