"""A tiny checkout with the Python client: tokenize the card and the shipping address at
checkout, keep only tokens, reveal the card for a refund with a purpose.

    make run        # in one terminal: the vault in dev mode on 127.0.0.1:50051
    .venv/bin/python examples/python_checkout.py 127.0.0.1:50051 "$(cat var/dev-api-key)"
"""

from __future__ import annotations

import sys

from vault.client import Address, DataKind, Vault, VaultError


def checkout(vault: Vault, pan: str, ship_to: Address) -> dict[str, str]:
    """The order as the shop stores it: tokens and masked forms, never the values."""
    card = vault.tokenize(DataKind.PAN, pan, metadata={"order": "o-1001"})
    address = vault.tokenize(DataKind.SHIPPING_ADDRESS, ship_to)
    return {"card": card.token, "card_masked": card.masked, "ship_to": address.token}


def refund(vault: Vault, order: dict[str, str]) -> str:
    """The refund desk reveals the card number, stating why (the reveal is audited)."""
    return str(vault.detokenize(order["card"], purpose="refund of order o-1001").value)


def main(argv: list[str]) -> int:
    address, api_key = argv[1], argv[2]
    with Vault.connect(address, api_key=api_key, tls=False) as vault:
        try:
            order = checkout(
                vault,
                "4242 4242 4242 4242",
                Address(
                    region_code="GB",
                    lines=("10 Downing Street",),
                    locality="London",
                    postal_code="SW1A 2AA",
                ),
            )
            print(f"order o-1001 stored with card {order['card_masked']} ({order['card']})")
            pan = refund(vault, order)
            print(f"refund to card ending {pan[-4:]}")
        except VaultError as error:
            print(
                f"vault refused: {error.code.name} {error.reason} {error.fields}", file=sys.stderr
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
