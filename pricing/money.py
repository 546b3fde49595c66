"""Money as integer micro-USD.

Rounding rule, the one place it is applied: a `Decimal` amount of USD is rounded to the nearest
micro-dollar, halves away from zero (ROUND_HALF_UP). Every provider unit is converted to USD as a
`Decimal` first and rounded once, here, so a price is never rounded twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MICROS_PER_USD = 1_000_000
_MICRO = Decimal("0.000001")


class UnknownPrice(ValueError):
    """A price the sources leave open: unknown, never zero."""


@dataclass(frozen=True, order=True, slots=True)
class Money:
    """An amount of USD in integer micro-dollars."""

    micros: int

    @classmethod
    def from_decimal(cls, usd: Decimal) -> Money:
        """Round a USD amount to the nearest micro-dollar (halves away from zero)."""
        return cls(int(usd.quantize(_MICRO, rounding=ROUND_HALF_UP).scaleb(6)))

    @classmethod
    def parse(cls, text: str) -> Money:
        """Read a decimal USD string such as "0.055" or "500.00"; ValueError if it is not one."""
        try:
            value = Decimal(text)
        except InvalidOperation as exc:
            raise ValueError(f"not a USD amount: {text!r}") from exc
        if not value.is_finite():
            raise ValueError(f"not a USD amount: {text!r}")
        return cls.from_decimal(value)

    @classmethod
    def zero(cls) -> Money:
        return cls(0)

    def to_decimal(self) -> Decimal:
        return Decimal(self.micros).scaleb(-6)

    def __str__(self) -> str:
        """Six fractional digits, the API's money format: "0.055000"."""
        sign = "-" if self.micros < 0 else ""
        whole, frac = divmod(abs(self.micros), MICROS_PER_USD)
        return f"{sign}{whole}.{frac:06d}"

    def __add__(self, other: Money) -> Money:
        return Money(self.micros + other.micros)

    def __sub__(self, other: Money) -> Money:
        return Money(self.micros - other.micros)

    def __mul__(self, factor: int) -> Money:
        return Money(self.micros * factor)
