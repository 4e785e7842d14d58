import os

# before prometheus_client is imported: the proxy serves its own registry (--metrics-listen) and
# must never write into a manager's multiprocess directory
os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

from storageproxy.server import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
