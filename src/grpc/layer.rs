//! The one tower layer in front of every gRPC service. Each call is classified by its
//! method path, its key checked against what that operation needs ([`super::auth`]), and
//! counted and timed into the request metrics ([`super::metered`]), refused calls too.

use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use tonic::body::Body;
use tower::{Layer, Service};

use super::{auth, metered};
use crate::service::ApiKeys;

/// Wraps each gRPC service in a [`Guarded`] one.
#[derive(Clone, Debug)]
pub(crate) struct GuardLayer {
    keys: ApiKeys,
}

impl GuardLayer {
    /// Checks calls against `keys`.
    pub(crate) fn new(keys: ApiKeys) -> Self {
        GuardLayer { keys }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guarded<S>;
    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            keys: self.keys.clone(),
        }
    }
}

/// A service whose calls are key-checked, counted and timed.
#[derive(Clone, Debug)]
pub(crate) struct Guarded<S> {
    inner: S,
    keys: ApiKeys,
}

impl<S> Service<http::Request<Body>> for Guarded<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let started = Instant::now();
        let path = req.uri().path();
        let op = auth::operation(path);
        let route = metered::route(path, op);
        let answer = match auth::check(&self.keys, req.headers(), op) {
            Ok(()) => {
                // The ready service answers this call; a fresh clone waits for the next.
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                Ok(ready.call(req))
            }
            Err(status) => Err(status.into_http()),
        };
        Box::pin(async move {
            let out = match answer {
                Ok(call) => call.await,
                Err(refused) => Ok(refused),
            };
            metered::record(route, &out, started);
            out
        })
    }
}
