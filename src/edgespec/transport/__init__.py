"""The only asyncio socket code: framed connections, the edge's link to its cloud."""
