"""The API routes, one module per group."""
