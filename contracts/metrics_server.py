"""The /metrics endpoint of the non-HTTP services (relay, processor, webhooks)."""

import logging

from prometheus_client import start_http_server

from contracts.settings import Settings

log = logging.getLogger("metrics")


def serve_metrics(settings: Settings) -> None:
    """Serve the default registry on the metrics host and port in a background thread; port 0
    means off."""
    port = settings.metrics_port
    if port == 0:
        return
    try:
        start_http_server(port, addr=settings.metrics_host)
    except OSError as error:  # a second instance on one host: run without metrics
        log.warning("metrics port %d unavailable (%s); metrics not served", port, error)
        return
    log.info("metrics on %s:%d/metrics", settings.metrics_host, port)
