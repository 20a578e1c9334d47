//! Shared foundations of Quarry: the errno vocabulary every layer maps its
//! errors onto, and (in later modules) configuration, keyrings and specs.

pub mod errno;

pub use errno::Errno;

pub mod blockcrc;
pub mod conf;
pub mod entity;
pub mod fsspace;
pub mod keyring;
pub mod monhost;
pub mod options;
pub mod port;
pub mod size;
pub mod spec;
