"""Character cards, the community's format (V1/V2/V3 as PNG, JSON or CHARX), and their lorebooks.

    codec.py     bytes <-> the card's JSON object (PNG tEXt chunks, JSON, CHARX zip), bounded reads
    spec.py      what the specs say about that object: is it a card, V1/V2 -> V3, the V2 backfill, macros,
                 {{original}}
    lorebook.py  world info: which entries fire for the recent turns, within a token budget, where they go
    worldinfo.py one conversation's world info, placed for the prefix cache (what the prompt builder calls)
    mapping.py   a card's fields <-> Zhiyin's Card (pure)
    transfer.py  import a card file as a new character folder, export a character as a card file
    portrait.py  the card's image <-> her portrait
"""
