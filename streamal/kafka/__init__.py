"""The only package that knows aiokafka: connections, topics, the produce-then-commit loop, dead letters."""
