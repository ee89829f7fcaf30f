//! What an endpoint on one collection receives, extracted once: the timer for Qdrant's
//! `time` field, the services, the collection's name from the path and the JSON body, and
//! for writes `?wait=`. Extraction runs in that order, so the first bad part is the one
//! reported, as with separate extractors.

use axum::extract::{FromRequest, FromRequestParts, Request};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use axum::http::request::Parts;

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, Timer};
use crate::service::Services;

/// A read or an admin call on `/collections/{name}/...` with a JSON body.
pub(crate) struct Call<B> {
    /// When the call began.
    pub(crate) t: Timer,
    /// The services.
    pub(crate) st: Services,
    /// The collection (or alias) named in the path.
    pub(crate) name: String,
    /// The parsed body.
    pub(crate) body: B,
}

/// A write on `/collections/{name}/...` with a JSON body and `?wait=`.
pub(crate) struct Write<B> {
    /// When the call began.
    pub(crate) t: Timer,
    /// The services.
    pub(crate) st: Services,
    /// The collection (or alias) named in the path.
    pub(crate) name: String,
    /// `?wait=` (default false; `ordering` and `timeout` are accepted and ignored).
    pub(crate) wait: bool,
    /// The parsed body.
    pub(crate) body: B,
}

/// Query parameters of writes.
#[derive(Deserialize, Default)]
struct WriteParams {
    #[serde(default)]
    wait: Option<bool>,
}

impl<B: DeserializeOwned> FromRequest<Services> for Call<B> {
    type Rejection = ApiError;
    async fn from_request(req: Request, st: &Services) -> Result<Self, ApiError> {
        extract(req, st, async |_| Ok(()))
            .await
            .map(|(call, ())| call)
    }
}

impl<B: DeserializeOwned> FromRequest<Services> for Write<B> {
    type Rejection = ApiError;
    async fn from_request(req: Request, st: &Services) -> Result<Self, ApiError> {
        let (call, wait) = extract(req, st, async |parts: &mut Parts| {
            let ApiQuery(q) = ApiQuery::<WriteParams>::from_request_parts(parts, st).await?;
            Ok(q.wait.unwrap_or(false))
        })
        .await?;
        Ok(Write {
            t: call.t,
            st: call.st,
            name: call.name,
            wait,
            body: call.body,
        })
    }
}

/// The timer, the path's collection name, then what `more` reads from the request's head,
/// then the JSON body: in that order, so the first bad part is the one reported.
async fn extract<B: DeserializeOwned, M>(
    req: Request,
    st: &Services,
    more: impl AsyncFnOnce(&mut Parts) -> Result<M, ApiError>,
) -> Result<(Call<B>, M), ApiError> {
    let (mut parts, body) = req.into_parts();
    let Ok(t) = Timer::from_request_parts(&mut parts, st).await;
    let ApiPath(name) = ApiPath::<String>::from_request_parts(&mut parts, st).await?;
    let more = more(&mut parts).await?;
    let ApiJson(body) = ApiJson::<B>::from_request(Request::from_parts(parts, body), st).await?;
    let call = Call {
        t,
        st: st.clone(),
        name,
        body,
    };
    Ok((call, more))
}

impl<B> Write<B> {
    /// The call and its body apart, so the body can be consumed.
    pub(crate) fn split(self) -> (Write<()>, B) {
        let call = Write {
            t: self.t,
            st: self.st,
            name: self.name,
            wait: self.wait,
            body: (),
        };
        (call, self.body)
    }
}
