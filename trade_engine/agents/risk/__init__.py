"""Admission: ``te.commands`` -> ``te.commands.accepted`` (Faust stages).

``validation`` checks each command (shape, key, symbol, partition) and
dead-letters what fails; ``stage`` is the risk stage, the same checks plus the
wallet's hold for every place; ``app`` builds their Faust apps.
"""
