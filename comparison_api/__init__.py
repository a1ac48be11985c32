"""comparison api balancer: the shared balancer, configured for its stage."""
