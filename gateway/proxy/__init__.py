"""The inference data plane (DESIGN.md section 3): a plain ASGI app, no Django."""
