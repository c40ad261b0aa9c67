"""A fresh machine's RabbitMQ answers AMQP without its management API, through which the tests
and the bench recreate their vhost: the error says what turns it on."""

import socket

import pytest

from tests.support.infrastructure import ManagementApiDown, recreate_vhost


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_management_api_that_does_not_answer_names_the_script_that_enables_it() -> None:
    port = _closed_port()

    with pytest.raises(ManagementApiDown) as raised:
        recreate_vhost(f"http://guest:guest@127.0.0.1:{port}", "anything")

    assert f"http://127.0.0.1:{port}" in str(raised.value)
    assert "scripts/local-services.sh" in str(raised.value)
