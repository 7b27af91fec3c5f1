"""Faust agents: risk, matcher, settlement and market data. They decode, call the core, emit."""
