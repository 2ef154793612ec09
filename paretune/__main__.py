"""``python -m paretune`` is the ``paretune`` command."""

import sys

from paretune.platform.cli import main

sys.exit(main())
