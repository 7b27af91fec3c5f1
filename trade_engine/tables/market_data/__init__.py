"""Market data built from the execution log: L2 depth, 1-minute candles, 24 h tickers.

Pure and deterministic like the matching core: the input is the sequence of
``te.executions`` records of one symbol (decoded by ``streams.execution_records``,
read by attribute: this package sits below streams), the clock is the
records' own ``at`` (never the wall clock), and every output is a function of
that sequence. Nothing here imports Kafka, the gateway or a database; the
``market-data`` agent and the gateway's feed are the adapters around it.

- ``depth``: resting quantity per price level; update ids are execution ``seq``.
- ``candles``: 1-minute OHLCV by record time.
- ``ticker``: rolling 24 h statistics folded from the minute candles.
- ``builder``: one symbol's three builders behind one ``apply``/``flush``, and the
  wire messages they publish.
- ``sync``: the client side of depth: snapshot + diffs with the resync rules.
"""

from trade_engine.tables.market_data.builder import (
    MarketDataBuilder,
    Output,
    PartitionMarketData,
    SymbolMarketData,
)
from trade_engine.tables.market_data.depth import DepthBook
from trade_engine.tables.market_data.exceptions import MarketDataError, ResyncNeededError
from trade_engine.tables.market_data.sync import DepthSync

__all__ = [
    "DepthBook",
    "DepthSync",
    "MarketDataBuilder",
    "MarketDataError",
    "Output",
    "PartitionMarketData",
    "ResyncNeededError",
    "SymbolMarketData",
]
