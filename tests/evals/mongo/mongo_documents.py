"""Collections shared by the embedded-executor and live-MongoDB tests (each keeps its own
`people`: the live tests add dates that the executor tests leave out)."""

ORDERS = [
    {"_id": 1, "item": "pen", "qty": 2, "price": 1.5, "store": "A"},
    {"_id": 2, "item": "ink", "qty": 1, "price": 10, "store": "B"},
    {"_id": 3, "item": "pen", "qty": 5, "price": 1.5, "store": "B"},
    {"_id": 4, "item": "pad", "qty": 3, "store": "A"},
]
ITEMS = [
    {"_id": 10, "sku": "pen", "color": "blue"},
    {"_id": 11, "sku": "pen", "color": "red"},
    {"_id": 12, "sku": "ink", "color": "black"},
]
