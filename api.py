"""Zhiyin's OpenAI-compatible API: ``python api.py [--host 127.0.0.1] [--port 8000]`` (the code is in api/)."""
from __future__ import annotations

import sys

from api.server import main

if __name__ == "__main__":
    sys.exit(main())
