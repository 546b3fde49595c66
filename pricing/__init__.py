"""Prices: `Money` (integer micro-USD), billing units, price rules and the route catalog. Pure, no I/O."""

from pricing.money import Money, UnknownPrice

__all__ = ["Money", "UnknownPrice"]
