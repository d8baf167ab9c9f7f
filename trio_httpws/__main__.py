"""``python -m trio_httpws``: the same as the ``trio-httpws`` command."""

from ._cli import main

raise SystemExit(main())
