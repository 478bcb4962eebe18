"""Root conftest: what pytest must not import while it collects doctests."""

collect_ignore = ["streamal/__main__.py", "scripts", "deploy", "demo-output"]
