"""free_port hands out ports no outgoing connection can take and never the same one twice."""

import socket

from hygen_pod.dev.pod_process import free_port


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral_low = int(f.read().split()[0])
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(p < ephemeral_low for p in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))


def test_a_port_in_use_is_skipped() -> None:
    with socket.socket() as held:
        port = free_port()
        held.bind(("127.0.0.1", port + 1))
        held.listen()
        assert free_port() != port + 1
