//! Fleet-wide tenant quotas (`[global]`): several Spillway processes share each tenant's
//! rate through leases kept in Redis, and each process charges its own lease locally.

pub mod lease;
pub mod thread;
