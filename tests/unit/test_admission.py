"""The handshake gate: bounds per address and in all, and slots come back when left."""

from edgespec.cloud.admission import HandshakeGate


def test_one_address_cannot_take_more_than_its_share() -> None:
    gate = HandshakeGate(max_pending=10, max_pending_per_address=2)
    assert gate.try_enter("10.0.0.9") and gate.try_enter("10.0.0.9")
    assert not gate.try_enter("10.0.0.9")
    assert gate.try_enter("10.0.0.1")  # another address still gets in
    gate.leave("10.0.0.9")
    assert gate.try_enter("10.0.0.9")


def test_the_total_bound_holds_across_addresses() -> None:
    gate = HandshakeGate(max_pending=3, max_pending_per_address=2)
    assert all(gate.try_enter(f"10.0.0.{n}") for n in range(3))
    assert not gate.try_enter("10.0.0.7")
    for n in range(3):
        gate.leave(f"10.0.0.{n}")
    assert gate.pending == 0 and gate.try_enter("10.0.0.7")
