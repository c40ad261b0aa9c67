"""The /metrics endpoint of the non-HTTP services (relay, processor, webhooks)."""

import logging

from prometheus_client import start_http_server

log = logging.getLogger("metrics")


def serve_metrics(port: int) -> None:
    """Serve the default registry on `port` in a background thread; 0 means off."""
    if port == 0:
        return
    try:
        start_http_server(port, addr="0.0.0.0")
    except OSError as error:  # a second instance on one host: run without metrics
        log.warning("metrics port %d unavailable (%s); metrics not served", port, error)
        return
    log.info("metrics on :%d/metrics", port)
