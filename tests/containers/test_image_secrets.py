"""No secret baked into an image: every container (and every volume seeded from the image) would
share it, and anyone holding the image could read it. Run by `make test-containers`, which names
the images; skipped where no image is named (`make test`, on the local services)."""

import os
import subprocess

import pytest

RABBITMQ_IMAGE = os.environ.get("PAYOUTS_RABBITMQ_IMAGE")


@pytest.mark.skipif(RABBITMQ_IMAGE is None, reason="PAYOUTS_RABBITMQ_IMAGE names no image")
def test_the_rabbitmq_image_carries_no_erlang_cookie() -> None:
    """Debian's rabbitmq-server writes /var/lib/rabbitmq/.erlang.cookie when it is installed: the
    node's distribution secret (full control of it through port 25672) was in a layer of the
    stand-in image."""
    assert RABBITMQ_IMAGE is not None
    listing = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "ls", RABBITMQ_IMAGE, "-A", "/var/lib/rabbitmq"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    assert ".erlang.cookie" not in listing
