"""The batch endpoints' bodies as msgspec Structs: one typed decode per request, one
encode per response (DESIGN §9: pydantic costs several µs per model, and a batch
carries up to 1000 of them, each validated, dumped, hashed and re-dumped).

``models`` (pydantic) stays the contract's reference: its JSON Schema, the single
endpoints, the words of every refusal. The client's batch calls use these Structs
too (``build``, ``encode_items``, ``decode_answers`` below). They accept a subset of
what the models accept and render the same JSON: every pattern here is anchored with
``\\Z`` (pydantic's Rust regex ``$`` is end of text, Python's ``$`` also matches
before a final newline), amounts are the same strict decimal strings, and an item
these Structs refuse is handed back to the pydantic path, which accepts it or words
the exact error.

Amounts stay text here, canonicalised on decode (``1.50`` -> ``1.5``, as
``format_amount(parse_amount(...))`` would), so an item's request hash is its
sorted compact encoding and the ledger parses each amount once. This module never
talks HTTP and never touches the database.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from decimal import Decimal, localcontext
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec

from trade_engine.connectors.wallet.models import (
    MAX_BATCH_ITEMS,
    ReleaseRequest,
    ReleaseResponse,
    ReserveRequest,
    ReserveResponse,
    SettleTradeRequest,
    SettleTradeResponse,
    format_amount,
)

_AMOUNT = r"^(0|[1-9][0-9]{0,19})(\.[0-9]{1,18})?\Z"
AmountText = Annotated[str, msgspec.Meta(pattern=_AMOUNT)]
Asset = Annotated[str, msgspec.Meta(pattern=r"^[A-Z0-9]{1,16}\Z")]
UserId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}\Z")]
Key = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,199}\Z")]
Reason = Annotated[str, msgspec.Meta(max_length=64)]


def canonical(text: str) -> str:
    """``format_amount(parse_amount(text))`` for text matching the amount pattern:
    only a fraction ending in 0 changes, so the common case costs no Decimal."""
    if text[-1] == "0" and "." in text:
        return format_amount(Decimal(text))
    return text


def _positive(text: str) -> str:
    if not text.strip("0."):  # the pattern leaves only digits and one dot
        raise ValueError("must be greater than 0")
    return text


def notional(price: Decimal, quantity: Decimal) -> Decimal:
    """price * quantity, exact (as ``SettleTradeRequest.notional``)."""
    with localcontext() as ctx:
        ctx.prec = 80  # 38 + 38 digits never round
        return (price * quantity).normalize(ctx)


class ReserveItem(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    user_id: UserId
    asset: Asset
    amount: AmountText
    order_id: Key
    reason: Reason | None = None
    idempotency_key: Key | None = None

    def __post_init__(self) -> None:
        self.amount = _positive(canonical(self.amount))

    @property
    def key(self) -> str:
        return self.idempotency_key or self.order_id


class ReleaseItem(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    user_id: UserId
    asset: Asset
    order_id: Key
    amount: AmountText | None = None
    reservation_id: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    reason: Reason | None = None
    idempotency_key: Key | None = None

    def __post_init__(self) -> None:
        if self.amount is not None:
            self.amount = canonical(self.amount)

    @property
    def key(self) -> str:
        return self.idempotency_key or self.order_id


class SettleItem(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    trade_id: Key
    buyer_user_id: UserId
    seller_user_id: UserId
    buyer_order_id: Key
    seller_order_id: Key
    base_asset: Asset
    quote_asset: Asset
    quantity: AmountText
    price: AmountText
    quote_quantity: AmountText | None = None
    buyer_fee: AmountText = "0"
    seller_fee: AmountText = "0"
    buyer_fee_asset: Asset | None = None
    seller_fee_asset: Asset | None = None
    symbol: Annotated[str, msgspec.Meta(max_length=40)] | None = None

    def __post_init__(self) -> None:
        self.quantity = _positive(canonical(self.quantity))
        self.price = _positive(canonical(self.price))
        if self.quote_quantity is not None:
            self.quote_quantity = _positive(canonical(self.quote_quantity))
        self.buyer_fee = canonical(self.buyer_fee)
        self.seller_fee = canonical(self.seller_fee)
        if not self._consistent():
            # The message does not matter: the pydantic path words the error.
            raise ValueError("inconsistent settle-trade")

    def _consistent(self) -> bool:
        """``SettleTradeRequest._consistent``'s checks, as one answer."""
        base, quote = self.base_asset, self.quote_asset
        if base == quote or self.buyer_order_id == self.seller_order_id:
            return False
        if self.buyer_fee_asset not in (None, base) or self.seller_fee_asset not in (None, quote):
            return False
        if self.symbol is not None and self.symbol != f"{base}/{quote}":
            return False
        quantity, total = Decimal(self.quantity), self.notional()
        exponent = total.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -18:
            return False
        if self.quote_quantity is not None and Decimal(self.quote_quantity) != total:
            return False
        return Decimal(self.buyer_fee) <= quantity and Decimal(self.seller_fee) <= total

    def notional(self) -> Decimal:
        return notional(Decimal(self.price), Decimal(self.quantity))


Item = ReserveItem | ReleaseItem | SettleItem


class ReserveBatch(msgspec.Struct, gc=False):
    # Other top-level keys are ignored, as the pydantic path ignores them.
    items: list[ReserveItem]


class ReleaseBatch(msgspec.Struct, gc=False):
    items: list[ReleaseItem]


class SettleBatch(msgspec.Struct, gc=False):
    items: list[SettleItem]


ITEMS: dict[str, type[Item]] = {
    "reserve": ReserveItem,
    "release": ReleaseItem,
    "settle": SettleItem,
}
_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "reserve": msgspec.json.Decoder(ReserveBatch),
    "release": msgspec.json.Decoder(ReleaseBatch),
    "settle": msgspec.json.Decoder(SettleBatch),
}


def decode_batch(op: str, body: bytes) -> list[Any] | None:
    """The items of a batch body, or None when the body needs the pydantic path
    (anything invalid, or a count outside 1..MAX_BATCH_ITEMS: it words the error)."""
    try:
        items: list[Any] = _DECODERS[op].decode(body).items
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return items if 1 <= len(items) <= MAX_BATCH_ITEMS else None


def from_model(op: str, model: Any) -> Item:
    """The item of a validated pydantic request (its JSON dump is canonical already)."""
    item: Item = ITEMS[op](**model.model_dump(mode="json"))
    return item


def to_builtins(item: Item) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(item)
    return data


_SORTED = msgspec.json.Encoder(order="sorted")


def request_hash(item: Item) -> str:
    """``_Request.request_hash`` of the same request: SHA-256 of the fields, sorted,
    compact, escaped as ``json.dumps`` escapes (everything outside space..tilde).
    msgspec writes the same bytes unless a string holds such a character: then its
    output shows a backslash, DEL or a non-ASCII byte, and ``json`` writes it."""
    raw = _SORTED.encode(item)
    if b"\\" in raw or b"\x7f" in raw or not raw.isascii():
        canonical_json = json.dumps(to_builtins(item), sort_keys=True, separators=(",", ":"))
        raw = canonical_json.encode()
    return hashlib.sha256(raw).hexdigest()


# --- answers ---------------------------------------------------------------------------
# Field order is the pydantic models' order, so an answer reads as it always did.


class Balance(msgspec.Struct, gc=False):
    available: str
    reserved: str


class ReserveResult(msgspec.Struct, kw_only=True, gc=False):
    success: bool = True
    reservation_id: str
    order_id: str
    user_id: str
    asset: str
    amount: str
    hold_remaining: str
    available_balance: str
    reserved_balance: str
    entry_id: int = 0  # known once the batch's journal entries are written


class ReleaseResult(msgspec.Struct, kw_only=True, gc=False):
    success: bool = True
    reservation_id: str
    order_id: str
    user_id: str
    asset: str
    released_amount: str
    hold_remaining: str
    available_balance: str
    reserved_balance: str
    entry_id: int = 0


class SettleResult(msgspec.Struct, kw_only=True, gc=False):
    success: bool = True
    trade_id: str
    entry_id: int = 0
    buyer_ledger_entry_id: int = 0
    seller_ledger_entry_id: int = 0
    quote_quantity: str
    buyer_hold_remaining: str
    seller_hold_remaining: str
    buyer_balances: dict[str, Balance]
    seller_balances: dict[str, Balance]

    def set_entry(self, entry_id: int) -> None:
        # One journal entry holds both legs (the seeds' names for the same id).
        self.entry_id = self.buyer_ledger_entry_id = self.seller_ledger_entry_id = entry_id


Result = ReserveResult | ReleaseResult | SettleResult
RESULTS: dict[str, type[Result]] = {
    "reserve": ReserveResult,
    "release": ReleaseResult,
    "settle": SettleResult,
}

_ENCODER = msgspec.json.Encoder()
encode = _ENCODER.encode


class ItemResult(msgspec.Struct, omit_defaults=True, gc=False):
    """One entry of a batch answer: ``result`` (the operation's answer, already encoded)
    when ok, else ``error``; the absent one is left out, as ``exclude_none`` did."""

    index: int
    ok: bool
    result: msgspec.Raw | None = None
    error: dict[str, Any] | None = None


class BatchAnswer(msgspec.Struct, gc=False):
    results: list[ItemResult]


def decode_result(op: str, stored: str | bytes) -> Result:
    """A stored answer (``operations.response``) as its Struct, to render it in field order."""
    result: Result = msgspec.json.decode(stored, type=RESULTS[op])
    return result


# --- the client's side -----------------------------------------------------------------
# The stages build their requests here and read the batch answers here: one msgspec
# convert per item, one encode per chunk, one decode per answer. Whatever a Struct
# refuses goes to the pydantic model, which refuses it in its own words or accepts it
# (then its canonical dump becomes the item), so a caller sees pydantic's behaviour.

_MODELS: dict[str, type[Any]] = {
    "reserve": ReserveRequest,
    "release": ReleaseRequest,
    "settle": SettleTradeRequest,
}
_AMOUNT_FIELDS: dict[str, tuple[str, ...]] = {
    "reserve": ("amount",),
    "release": ("amount",),
    "settle": ("quantity", "price", "quote_quantity", "buyer_fee", "seller_fee"),
}


def build(op: str, fields: dict[str, Any]) -> Item:
    """The item of a request with these fields, accepted exactly when the pydantic model
    accepts them; raises the model's ``pydantic.ValidationError`` when it does not.
    Decimal amounts are taken as ``parse_amount`` takes them."""
    text = dict(fields)
    for name in _AMOUNT_FIELDS[op]:
        value = text.get(name)
        if isinstance(value, Decimal) and value.is_finite() and value >= 0:
            text[name] = format_amount(value)
    try:
        item: Item = msgspec.convert(text, ITEMS[op])
    except msgspec.ValidationError:
        return from_model(op, _MODELS[op].model_validate(fields))
    return item


def as_item(op: str, request: Any) -> Item:
    """A request as its item: an item as it is, a pydantic request by its dump."""
    return request if isinstance(request, ITEMS[op]) else from_model(op, request)


def encode_items(items: Sequence[Item]) -> bytes:
    """A batch body, ``{"items": [...]}``: each item's fields in order, None left out
    (what ``model_dump(mode="json", exclude_none=True)`` sent)."""
    return _ENCODER.encode({"items": [_present(item) for item in items]})


def _present(item: Item) -> dict[str, Any]:
    return {
        name: value
        for name, value in zip(item.__struct_fields__, msgspec.structs.astuple(item), strict=True)
        if value is not None
    }


_LIMIT = Decimal(10) ** 20  # numeric(38,18): at most 20 integer digits


def _amounts(*values: Decimal) -> None:
    """Refuse an amount no ``parse_amount`` text could give: negative, NaN, infinite or
    of more than 20 integer digits (compared, not taken apart: this runs per answer).
    msgspec reads a ``Decimal`` from any decimal spelling (``01``, ``1.5e0``, a JSON
    number): such an amount passes for the value it spells; our service writes
    canonical text and no stage reads these values."""
    try:
        for value in values:
            if not 0 <= value < _LIMIT:
                raise ValueError("not a plain decimal with <=20+18 digits")
    except ArithmeticError:  # NaN does not compare
        raise ValueError("not a plain decimal with <=20+18 digits") from None


class _Answer(msgspec.Struct, forbid_unknown_fields=True, frozen=True, gc=False):
    pass


class AssetBalanceAnswer(_Answer, frozen=True):
    available: Decimal
    reserved: Decimal

    def __post_init__(self) -> None:
        _amounts(self.available, self.reserved)


class ReserveAnswer(_Answer, frozen=True, kw_only=True):
    """``ReserveResponse``, as the client reads it from a batch answer."""

    success: Literal[True] = True
    reservation_id: str
    order_id: str
    user_id: str
    asset: str
    amount: Decimal
    hold_remaining: Decimal
    available_balance: Decimal
    reserved_balance: Decimal
    entry_id: int

    def __post_init__(self) -> None:
        _amounts(self.amount, self.hold_remaining, self.available_balance, self.reserved_balance)


class ReleaseAnswer(_Answer, frozen=True, kw_only=True):
    """``ReleaseResponse``, as the client reads it from a batch answer."""

    success: Literal[True] = True
    reservation_id: str
    order_id: str
    user_id: str
    asset: str
    released_amount: Decimal
    hold_remaining: Decimal
    available_balance: Decimal
    reserved_balance: Decimal
    entry_id: int

    def __post_init__(self) -> None:
        _amounts(
            self.released_amount,
            self.hold_remaining,
            self.available_balance,
            self.reserved_balance,
        )


class SettleAnswer(_Answer, frozen=True, kw_only=True):
    """``SettleTradeResponse``, as the client reads it from a batch answer."""

    success: Literal[True] = True
    trade_id: str
    entry_id: int
    buyer_ledger_entry_id: int
    seller_ledger_entry_id: int
    quote_quantity: Decimal
    buyer_hold_remaining: Decimal
    seller_hold_remaining: Decimal
    buyer_balances: dict[str, AssetBalanceAnswer]
    seller_balances: dict[str, AssetBalanceAnswer]

    def __post_init__(self) -> None:
        _amounts(self.quote_quantity, self.buyer_hold_remaining, self.seller_hold_remaining)


Answer = ReserveAnswer | ReleaseAnswer | SettleAnswer
A = TypeVar("A", ReserveAnswer, ReleaseAnswer, SettleAnswer)
ANSWERS: dict[str, type[Answer]] = {
    "reserve": ReserveAnswer,
    "release": ReleaseAnswer,
    "settle": SettleAnswer,
}
_RESPONSES: dict[str, type[Any]] = {
    "reserve": ReserveResponse,
    "release": ReleaseResponse,
    "settle": SettleTradeResponse,
}


class ItemAnswer(msgspec.Struct, Generic[A], gc=False):
    """One entry of a batch answer; other keys are ignored, as the dict reading did."""

    index: int
    ok: bool
    result: A | None = None
    error: Any = None


class Answers(msgspec.Struct, Generic[A], gc=False):
    results: list[ItemAnswer[A]]


_ANSWER_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    op: msgspec.json.Decoder(Answers[answer])  # type: ignore[valid-type]
    for op, answer in ANSWERS.items()
}


def decode_answers(op: str, body: bytes) -> list[ItemAnswer[Any]] | None:
    """A batch answer's entries by index, or None when the body needs the dict reading
    (anything the Structs refuse: that path accepts it or fails as it always did)."""
    try:
        results: list[ItemAnswer[Any]] = _ANSWER_DECODERS[op].decode(body).results
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    if any(r.ok and r.result is None for r in results):
        return None
    results.sort(key=_index)
    return results


def _index(result: ItemAnswer[Any]) -> int:
    return result.index


def answer_from_json(op: str, result: Any) -> Answer:
    """An ok entry's ``result`` read by the pydantic response (raising its
    ``ValidationError``), as its answer Struct."""
    model = _RESPONSES[op].model_validate(result)
    answer: Answer = msgspec.convert(model.model_dump(mode="json"), ANSWERS[op])
    return answer
