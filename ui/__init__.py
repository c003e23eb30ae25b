"""nnps.ui: the local web page of `nnps ui` (an aiohttp server and its static page)."""
