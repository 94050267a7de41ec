"""``python -m fastlic.cli``: the ``fastlic`` command."""
from . import main

raise SystemExit(main())
