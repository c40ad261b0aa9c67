"""`payouts up` (what `make run` runs) starts each service in a session of its own. In the
supervisor's process group, a terminal's Ctrl-C reached every service as well as the supervisor,
whose stop then sent each its SIGTERM: a second signal, on which a service stops at once, the
work in its hands cut short (found by the lifecycle review: the relay, the processor and the
webhook service each exited 1, "stopping at once")."""

import os

from cli.supervisor import Service, ServiceGroup
from tests.support.system import free_port


def test_a_service_of_payouts_up_is_out_of_reach_of_its_terminals_ctrl_c(
    service_env: dict[str, str],
) -> None:
    group = ServiceGroup(env=service_env)  # as `payouts up` makes it: the terminal its output
    sink = Service("webhook-sink", ("webhook-sink", "--port", str(free_port())))
    process = group.start(sink)
    try:
        assert os.getpgid(process.pid) != os.getpgid(0)  # not in the terminal's group
        assert os.getsid(process.pid) == process.pid
    finally:
        group.stop()
