//! `POST /repository/verify`: verifies the whole snapshot storage (full key). HTTP only;
//! the work is `service::verify`.

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use serde::Deserialize;

use super::error::{optional_body, ApiQuery, ApiResult, Timer};
use super::guarded;
use super::snapshots::{answer, WaitParam};
use crate::service::{Operation as Op, Services};

/// Repository routes.
pub(crate) fn routes(st: &Services) -> Router<Services> {
    Router::new().route(
        "/repository/verify",
        guarded(st, Op::VerifyRepository, post(verify)),
    )
}

/// Optional body of `POST /repository/verify`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    /// The fraction of pieces read back and hashed again.
    #[serde(default = "default_read_data")]
    read_data: f64,
}

fn default_read_data() -> f64 {
    0.1
}

impl Default for VerifyBody {
    fn default() -> Self {
        VerifyBody {
            read_data: default_read_data(),
        }
    }
}

/// `POST /repository/verify?wait=`
async fn verify(
    t: Timer,
    State(st): State<Services>,
    ApiQuery(q): ApiQuery<WaitParam>,
    body: Bytes,
) -> ApiResult {
    let body: VerifyBody = optional_body(&body, "a verify request")?;
    answer(
        &t,
        st.verify
            .run(body.read_data, q.wait.unwrap_or(true))
            .await?,
    )
}
