//! The front door: the data plane. TLS termination, routing by host and a
//! streaming reverse proxy, in a process of its own (`commonscloud
//! front-door`) so restarting the supervisor cuts no upload.
//!
//! `ca` makes the appliance's own certificates and `routes` says which host
//! goes where (both the supervisor's job, the front door reads the result).

pub mod ca;
pub mod proxy;
pub mod routes;
