"""Deployment tooling: renders the edge proxy and the AWS template from the one URL table, and the pins of the
offline validators (`python -m deploy.render`, `python -m deploy.validate`)."""
