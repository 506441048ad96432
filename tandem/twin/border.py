"""The border between the twin's two regions: what one region's functions reach of the other.

In AWS a region calls the other over the network (its regional endpoints, its ingress); a partition cuts
that network while each region stays alive for itself and for its own clients. The twin's regions share one
machine, so the border is explicit: each region's API endpoint and ingress is also served through a relay
(:class:`tandem.twin.relay.Relay`), and *that* is the address the other region is deployed with
(``PeerAwsEndpointUrl``; the ingress's ``ApiEndpoint`` output, from which the deploy plan computes
``PeerHealthUrl``). Producers and operators use the direct addresses. A partition closes every relay - new
calls are refused and open connections cut - and healing opens them again. Route53's checkers run outside
both regions, so a partitioned region is cut off from them too (the twin's probe, ``Twin._probe``, says so).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tandem.localpg import free_port
from tandem.twin.relay import Relay

HOST = "127.0.0.1"


class Border:
    """One relay per (region, API endpoint | ingress), open unless the regions are partitioned."""

    def __init__(self, root: Path, api_ports: dict[str, int], ingress_ports: dict[str, int]) -> None:
        """``root``: where the relays' flags live - a tree the twin's clean-up knows (processes naming it die)."""
        where = root / "border"
        where.mkdir(parents=True, exist_ok=True)
        self.relays = {
            (region, kind): Relay((HOST, free_port()), (HOST, port), where / f"{region}-{kind}", cut=True)
            for kind, ports in (("api", api_ports), ("ingress", ingress_ports))
            for region, port in ports.items()
        }

    def api_url(self, region: str) -> str:
        return self.relays[(region, "api")].url

    def ingress_url(self, region: str) -> str:
        return self.relays[(region, "ingress")].url

    @property
    def is_open(self) -> bool:
        return all(relay.flag.exists() for relay in self.relays.values())

    def start(self) -> None:
        for relay in self.relays.values():
            relay.open(True)
            relay.start()
        for relay in self.relays.values():
            _wait_listening(relay)

    def cut(self) -> None:
        """Nothing crosses, either way (two regions: cutting one off cuts every path)."""
        for relay in self.relays.values():
            relay.open(False)

    def mend(self) -> None:
        for relay in self.relays.values():
            relay.open(True)

    def stop(self) -> None:
        for relay in self.relays.values():
            relay.stop()


def _wait_listening(relay: Relay, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(relay.listen, timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the border relay {relay.listen} did not start listening") from None
            time.sleep(0.05)
