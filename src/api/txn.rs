//! The gRPC `flashkv.v1.Txn` service: transactions held across requests,
//! by id, in the coordinator's registry (see [`crate::txn`]).
//!
//! Aborts answer `ABORTED` with the reason; an unknown or expired id
//! answers `NOT_FOUND`; a commit whose outcome is unknown answers
//! `UNAVAILABLE` (never `ABORTED`).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::api::Limits;
use crate::api::grpc::{get_response, proto, status};
use crate::shard::router::scan_bounds;
use crate::storage::store::now_ms;
use crate::txn::{Commit, Coordinator, registry::Handle};
use proto::txn_server::Txn;
use proto::*;

/// The Txn service.
#[derive(Clone)]
pub struct TxnService {
    coord: Arc<Coordinator>,
    limits: Limits,
}

impl TxnService {
    /// A service over `coord`.
    pub fn new(coord: Arc<Coordinator>, limits: Limits) -> Self {
        TxnService { coord, limits }
    }

    fn open(&self, id: u64) -> Result<Handle, Status> {
        self.coord.registry.get(id).ok_or_else(|| gone(id))
    }
}

fn gone(id: u64) -> Status {
    Status::not_found(format!(
        "transaction {id} is not open: it committed, rolled back, or expired after its idle timeout"
    ))
}

#[tonic::async_trait]
impl Txn for TxnService {
    async fn begin(&self, _: Request<BeginRequest>) -> Result<Response<BeginResponse>, Status> {
        let txn = self.coord.begin().await;
        let read_version = txn.read_version();
        let txn_id = self.coord.registry.insert(txn);
        Ok(Response::new(BeginResponse {
            txn_id,
            read_version,
        }))
    }

    async fn get(&self, req: Request<TxnGetRequest>) -> Result<Response<GetResponse>, Status> {
        let r = req.into_inner();
        self.limits.check_key(&r.key).map_err(status)?;
        let h = self.open(r.txn_id)?;
        let mut g = h.lock().await;
        let txn = g.as_mut().ok_or_else(|| gone(r.txn_id))?;
        let v = self.coord.get(txn, &r.key).map_err(status)?;
        Ok(Response::new(get_response(v)))
    }

    async fn scan(
        &self,
        req: Request<TxnScanRequest>,
    ) -> Result<Response<TxnScanResponse>, Status> {
        let r = req.into_inner();
        let (lower, upper) = scan_bounds(&r.start, &r.end, &r.prefix);
        let limit = if r.limit == 0 { 1000 } else { r.limit as usize };
        let h = self.open(r.txn_id)?;
        let mut g = h.lock().await;
        let txn = g.as_mut().ok_or_else(|| gone(r.txn_id))?;
        let items = self
            .coord
            .scan(txn, lower, upper, r.reverse, limit)
            .map_err(status)?
            .into_iter()
            .map(|(key, v)| KeyValue {
                key,
                value: v.value,
                version: v.version,
            })
            .collect();
        Ok(Response::new(TxnScanResponse { items }))
    }

    async fn put(&self, req: Request<TxnPutRequest>) -> Result<Response<TxnWriteResponse>, Status> {
        let r = req.into_inner();
        self.limits.check_key(&r.key).map_err(status)?;
        self.limits.check_value(&r.value).map_err(status)?;
        let h = self.open(r.txn_id)?;
        let mut g = h.lock().await;
        let txn = g.as_mut().ok_or_else(|| gone(r.txn_id))?;
        let expires = (r.ttl_ms > 0).then(|| now_ms().saturating_add(r.ttl_ms));
        txn.delete(crate::keyspace::meta_key(&r.key));
        txn.put(r.key, r.value, expires);
        Ok(Response::new(TxnWriteResponse {}))
    }

    async fn delete(
        &self,
        req: Request<TxnDeleteRequest>,
    ) -> Result<Response<TxnWriteResponse>, Status> {
        let r = req.into_inner();
        self.limits.check_key(&r.key).map_err(status)?;
        let h = self.open(r.txn_id)?;
        let mut g = h.lock().await;
        let txn = g.as_mut().ok_or_else(|| gone(r.txn_id))?;
        txn.delete(crate::keyspace::meta_key(&r.key));
        txn.delete(r.key);
        Ok(Response::new(TxnWriteResponse {}))
    }

    async fn commit(
        &self,
        req: Request<CommitRequest>,
    ) -> Result<Response<CommitResponse>, Status> {
        let id = req.into_inner().txn_id;
        let h = self.open(id)?;
        let txn = h.lock().await.take().ok_or_else(|| gone(id))?;
        self.coord.registry.remove(id);
        match self.coord.commit(txn).await.map_err(status)? {
            Commit::Committed { version } => Ok(Response::new(CommitResponse { version })),
            Commit::Aborted(a) => Err(Status::aborted(a.to_string())),
        }
    }

    async fn rollback(
        &self,
        req: Request<RollbackRequest>,
    ) -> Result<Response<RollbackResponse>, Status> {
        let id = req.into_inner().txn_id;
        let found = match self.coord.registry.get(id) {
            Some(h) => h.lock().await.take().is_some(),
            None => false,
        };
        self.coord.registry.remove(id);
        Ok(Response::new(RollbackResponse { found }))
    }
}
