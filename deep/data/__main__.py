"""``python -m deep.data info SPEC`` / ``export NAME_OR_SPEC PATH`` (see :func:`deep.data.main`)."""

import sys

from deep.data import main

sys.exit(main())
