"""C{python -m gatewayd ...} is the C{gatewayd} command."""

import sys

from gatewayd.cli import main

sys.exit(main())
