//! End-to-end tests (`tests/`) and benchmarks (`benches/`) of the whole system:
//! etcd, redis-server with node-agents, dnsd, dictator, observer and HAProxy, all
//! real processes started by `harness::stack`. No library code lives here.
