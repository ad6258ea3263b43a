"""Read-only clients for what the suites measure: Envoy admin, Consul, Jaeger, instances."""
