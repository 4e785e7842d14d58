"""``python -m agents.daemon``."""
import os
import sys

# before prometheus_client is imported: this daemon serves its own registry on its own /metrics,
# and must never write into a manager's multiprocess directory (the manager's listener would
# then count this daemon's metrics as its own, twice over in a dashboard)
os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

from .cli import main  # noqa: E402

sys.exit(main())
