"""`edgespec netem up|down|status`: a real kernel network path for the cloud. The cloud runs in a
network namespace joined to this one by a veth pair with link-local addresses (169.254.77.0/30,
never routed off this machine), and `tc netem` shapes both directions: half the RTT each way,
jitter, rate and loss. `cut` takes the path down for a while, as a fault drill. Needs root and
iproute2."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass

NAMESPACE = "edgespec-cloud"
EDGE_DEVICE, CLOUD_DEVICE = "es-edge", "es-cloud"
EDGE_ADDRESS, CLOUD_ADDRESS, PREFIX = "169.254.77.1", "169.254.77.2", 30
# what `ip link delete` says of a link already gone: not found by name, or gone while it was deleted
LINK_GONE = ("Cannot find device", "No such device")


@dataclass(frozen=True)
class Shaping:
    rtt_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_mbit: float | None = None
    loss_percent: float = 0.0

    def __post_init__(self) -> None:
        if self.rtt_ms < 0 or self.jitter_ms < 0 or not 0 <= self.loss_percent < 100:
            raise ValueError("RTT and jitter must not be negative; loss must be in [0, 100) percent")
        if self.rate_mbit is not None and self.rate_mbit <= 0:
            raise ValueError("rate must be positive")

    @property
    def shapes(self) -> bool:
        return bool(self.rtt_ms or self.jitter_ms or self.rate_mbit or self.loss_percent)

    def netem_args(self) -> list[str]:
        """One direction's netem: half the RTT, and the jitter split alike."""
        args = ["delay", f"{self.rtt_ms / 2}ms"]
        if self.jitter_ms:
            args.append(f"{self.jitter_ms / 2}ms")
        if self.rate_mbit:
            args += ["rate", f"{self.rate_mbit}mbit"]
        if self.loss_percent:
            args += ["loss", f"{self.loss_percent}%"]
        return args


def up(shaping: Shaping) -> str:
    """Create the namespace, the veth pair and the shaping; returns the cloud's address."""
    _require_tools()
    if is_up():
        raise ValueError(f"namespace {NAMESPACE} already exists: run `edgespec netem down` first")
    try:
        _run("ip", "netns", "add", NAMESPACE)
        _run("ip", "link", "add", EDGE_DEVICE, "type", "veth", "peer", "name", CLOUD_DEVICE)
        _run("ip", "link", "set", CLOUD_DEVICE, "netns", NAMESPACE)
        _run("ip", "addr", "add", f"{EDGE_ADDRESS}/{PREFIX}", "dev", EDGE_DEVICE)
        _run("ip", "link", "set", EDGE_DEVICE, "up")
        _in_namespace("ip", "addr", "add", f"{CLOUD_ADDRESS}/{PREFIX}", "dev", CLOUD_DEVICE)
        _in_namespace("ip", "link", "set", CLOUD_DEVICE, "up")
        _in_namespace("ip", "link", "set", "lo", "up")
        if shaping.shapes:
            _shape(shaping)
    except ValueError:
        down()  # leave nothing half-built
        raise
    return CLOUD_ADDRESS


def _shape(shaping: Shaping) -> None:
    try:
        _run("tc", "qdisc", "add", "dev", EDGE_DEVICE, "root", "netem", *shaping.netem_args())
    except ValueError as exc:
        if "unknown" in str(exc):
            raise ValueError("this kernel has no netem qdisc (sch_netem); use the edge's --link-* emulation") from None
        raise
    _in_namespace("tc", "qdisc", "add", "dev", CLOUD_DEVICE, "root", "netem", *shaping.netem_args())


def down() -> None:
    """Remove the namespace; the veth pair and its shaping go with it."""
    _require_tools()
    if is_up():
        _run("ip", "netns", "delete", NAMESPACE)
    # the namespace's end of the pair goes with it and takes ours along, a moment later: a pair
    # that vanished before the command looked it up, or while it ran, is what we wanted
    deleted = subprocess.run(["ip", "link", "delete", EDGE_DEVICE], capture_output=True, text=True)
    if deleted.returncode != 0 and not any(gone in deleted.stderr for gone in LINK_GONE):
        raise ValueError(f"`ip link delete {EDGE_DEVICE}` failed: {deleted.stderr.strip()}")
    deadline = time.monotonic() + 5.0  # and wait until it is gone, so a new pair can take its name
    while _link_exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _link_exists() -> bool:
    return subprocess.run(["ip", "link", "show", EDGE_DEVICE], capture_output=True).returncode == 0


def cut(seconds: float) -> None:
    """Take the path down for `seconds` and bring it back: packets both ways are dropped meanwhile,
    as when a cable is pulled; TCP sees silence, not a reset."""
    if not is_up():
        raise ValueError(f"namespace {NAMESPACE} is not up: run `edgespec netem up` first")
    set_path(up=False)
    try:
        time.sleep(seconds)
    finally:
        set_path(up=True)


def set_path(up: bool) -> None:
    """Bring the edge end of the veth pair down or up (its address and route come back with it)."""
    _run("ip", "link", "set", EDGE_DEVICE, "up" if up else "down")


def is_up() -> bool:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return any(line.split()[0] == NAMESPACE for line in listing.stdout.splitlines() if line.strip())


def run_in_cloud_namespace(command: list[str]) -> list[str]:
    """`command` prefixed to run inside the cloud's namespace."""
    return ["ip", "netns", "exec", NAMESPACE, *command]


def _in_namespace(*command: str) -> None:
    _run(*run_in_cloud_namespace(list(command)))


def _run(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise ValueError(f"`{' '.join(command)}` failed: {done.stderr.strip() or done.stdout.strip()}")


def _require_tools() -> None:
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        raise ValueError(f"netem needs iproute2 ({', '.join(missing)} not found; e.g. apt-get install iproute2)")
