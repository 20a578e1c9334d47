//! The networked object layer (monitors + OSDs).
//!
//! The cluster client crate is not part of this build yet, so connecting
//! to `mon_host` reports `ENOTCONN` with a clear message instead of
//! pretending to work.

use std::sync::Arc;

use quarry_common::Errno;
use quarry_rados::Rados;

use crate::config::Config;
use crate::engine::{CError, CResult};

/// Connect to the cluster named by `mon_host` with the configured key.
pub fn connect(conf: &Config) -> CResult<Arc<dyn Rados>> {
    let mon = conf.get("mon_host").unwrap_or_default();
    eprintln!(
        "quarry: cannot connect to monitors at {mon}: this library was built without the \
         cluster client; set quarry_embedded_dir for a local store"
    );
    Err(CError::new(Errno::ENOTCONN, "cluster client not available"))
}
