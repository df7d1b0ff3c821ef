"""Admission asks the ledger about the sender: txs the ledger would certainly fail never enter the pool."""

from __future__ import annotations

from node.mempool import Mempool
from protocol.crypto import PrivateKey
from protocol.ledger import admission_error, apply_genesis
from protocol.state import MemoryState, Overlay
from protocol.tx import SignedTx

CHAIN = "test"
SME = PrivateKey(b"\x01" * 32)
STRANGER = PrivateKey(b"\x02" * 32)


def _pool() -> Mempool:
    base = MemoryState()
    ov = Overlay(base)
    apply_genesis(ov, {"participants": [{"id": SME.public_key.hex(), "name": "sme", "roles": ["SME"], "kyc": 1}],
                       "assets": [], "balances": []})
    base.apply(ov.changes())

    def check(tx: SignedTx) -> tuple[str, str] | None:
        err = admission_error(base, tx)
        return None if err is None else (err.code, err.message)

    return Mempool(CHAIN, lambda k: 0, sender_check=check)


def _tx(key: PrivateKey, kind: str, **fields: object) -> bytes:
    return SignedTx.create(key, {"chain": CHAIN, "kind": kind, "nonce": 0, **fields}).raw


async def test_a_tx_from_an_unregistered_key_is_rejected_as_not_registered() -> None:
    pool = _pool()
    [res] = await pool.add_many([_tx(STRANGER, "transfer", to=SME.public_key, asset="CNY.X", amount=1)])
    assert not res.accepted and res.code == "not_registered"
    assert len(pool) == 0
    pool.close()


async def test_a_kind_the_senders_roles_do_not_allow_is_rejected_as_forbidden_role() -> None:
    pool = _pool()
    [res] = await pool.add_many([_tx(SME, "issue", asset="CNY.X", amount=5, to=SME.public_key)])
    assert not res.accepted and res.code == "forbidden_role"
    pool.close()


async def test_an_unknown_kind_is_rejected_and_a_registered_senders_transfer_is_accepted() -> None:
    pool = _pool()
    bad, good = await pool.add_many([_tx(SME, "no-such-kind"),
                                     _tx(SME, "transfer", to=STRANGER.public_key, asset="CNY.X", amount=1)])
    assert bad.code == "unknown_kind" and not bad.accepted
    assert good.accepted
    pool.close()
