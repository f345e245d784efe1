"""Message types of CARS: the events and commands on the bus and in the store.

`contracts.codec` holds the one converter; importing it registers every message.
"""

from contracts.catalog import Area, Entry, Kind, by_class, by_tag, entries
from contracts.codec import ContractError, converter, decode, dumps, encode, loads, structure, unstructure
from contracts.envelope import CARS_NAMESPACE, Envelope, natural_id, reply_id

__all__ = [
    "CARS_NAMESPACE", "Area", "ContractError", "Entry", "Envelope", "Kind", "by_class", "by_tag",
    "converter", "decode", "dumps", "encode", "entries", "loads", "natural_id", "reply_id", "structure",
    "unstructure",
]
