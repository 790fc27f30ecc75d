"""``python -m pyramid_mongosession.cli``: the same as ``pmongosession``."""
import sys

from . import main

sys.exit(main())
