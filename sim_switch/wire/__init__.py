"""The switch's own HTTP/2: connections on h2 with one reader each, a pool, and an httpx transport over them."""
