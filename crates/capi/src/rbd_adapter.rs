//! [`ImageEngine`] on the image engine crate (placeholder until it lands:
//! every image operation reports `EOPNOTSUPP`).

use std::sync::Arc;

use async_trait::async_trait;
use quarry_common::Errno;
use quarry_rados::{PoolId, Rados};

use crate::engine::{CError, CResult, CreateOpts, ImageBackend, ImageEngine, IoTarget};

struct Unavailable;

fn no<T>() -> CResult<T> {
    Err(CError::new(Errno::EOPNOTSUPP, "image engine not available"))
}

#[async_trait]
impl ImageEngine for Unavailable {
    async fn create(&self, _io: &IoTarget, _name: &str, _opts: &CreateOpts) -> CResult<()> {
        no()
    }
    async fn remove(&self, _io: &IoTarget, _name: &str) -> CResult<()> {
        no()
    }
    async fn rename(&self, _io: &IoTarget, _from: &str, _to: &str) -> CResult<()> {
        no()
    }
    async fn open(
        &self,
        _io: &IoTarget,
        _name: &str,
        _snap: Option<&str>,
        _read_only: bool,
    ) -> CResult<Arc<dyn ImageBackend>> {
        no()
    }
    async fn list(&self, _io: &IoTarget) -> CResult<Vec<(String, String)>> {
        no()
    }
    async fn clone_image(
        &self,
        _pio: &IoTarget,
        _parent: &str,
        _snap: &str,
        _cio: &IoTarget,
        _child: &str,
        _opts: &CreateOpts,
    ) -> CResult<()> {
        no()
    }
    async fn namespace_exists(&self, _pool: PoolId, _ns: &str) -> CResult<bool> {
        no()
    }
    async fn pool_config(&self, _io: &IoTarget) -> CResult<Vec<(String, String)>> {
        Ok(Vec::new())
    }
}

/// The engine for a connection.
pub fn engine(_rados: Arc<dyn Rados>) -> Arc<dyn ImageEngine> {
    Arc::new(Unavailable)
}
