"""GET /health of the regional ingress: whether this region can accept transactions now."""
