"""Shared by the serving tests (importable from the test modules)."""

DEFINITION = """\
models:
  - name: echo
    model_path: /models
    service:
      start_command: ["python3", "-m", "http.server", "8000"]
      port: 8000
      health_check:
        path: /health
        interval: 2
        max_wait_time: 2
        max_retries: 3
        initial_delay: 0
        expected_status_code: 200
"""

