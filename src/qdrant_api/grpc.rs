//! Points over Qdrant's gRPC API, used by `migrate` when both servers' gRPC
//! addresses are given: vectors travel as packed floats and payloads as protobuf values,
//! passed from the source's scroll answer to the destination's upsert without a JSON text
//! in between, which costs both servers and the client far less than REST's decimal floats.

use std::time::Duration;

use qdrant_client::qdrant::points_client::PointsClient;
use qdrant_client::qdrant::{
    vector, vector_output, vectors, vectors_output, with_payload_selector, with_vectors_selector,
    DenseVector, NamedVectors, PointId, PointStruct, RetrievedPoint, ScrollPoints, UpsertPoints,
    Vector, VectorOutput, Vectors, WithPayloadSelector, WithVectorsSelector,
};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

/// Adds the `api-key` header to every call when a key is given.
#[derive(Clone)]
struct ApiKey(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for ApiKey {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(k) = &self.0 {
            req.metadata_mut().insert("api-key", k.clone());
        }
        Ok(req)
    }
}

/// One server's points service.
#[derive(Clone)]
pub(crate) struct GrpcPoints {
    url: String,
    client: PointsClient<InterceptedService<Channel, ApiKey>>,
}

impl std::fmt::Debug for GrpcPoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcPoints")
            .field("url", &self.url)
            .finish()
    }
}

/// A page of points in the shape the destination's upsert takes.
pub(crate) type Page = Vec<PointStruct>;

impl GrpcPoints {
    /// Connects to the gRPC API at `url` (e.g. `http://127.0.0.1:6334`), sending `api_key`
    /// as the `api-key` header when given.
    pub(crate) async fn connect(url: &str, api_key: Option<String>) -> Result<Self, String> {
        let key = match api_key {
            Some(k) => Some(
                MetadataValue::try_from(k.as_str())
                    .map_err(|_| "the API key is not a valid header value".to_string())?,
            ),
            None => None,
        };
        let channel = Endpoint::from_shared(url.to_string())
            .map_err(|e| format!("`{url}` is not a gRPC URL: {e}"))?
            .connect_timeout(Duration::from_secs(10))
            // Pages are megabytes: HTTP/2's 64 KiB default window would stall each one.
            .initial_stream_window_size(8 << 20)
            .initial_connection_window_size(16 << 20)
            .connect()
            .await
            .map_err(|e| format!("cannot connect to gRPC at {url}: {e}"))?;
        let client = PointsClient::with_interceptor(channel, ApiKey(key))
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        Ok(GrpcPoints {
            url: url.to_string(),
            client,
        })
    }

    /// One page of `name` from `offset`, with payloads and vectors, and the next offset.
    pub(crate) async fn scroll(
        &self,
        name: &str,
        offset: Option<PointId>,
        limit: usize,
    ) -> Result<(Page, Option<PointId>), String> {
        let req = ScrollPoints {
            collection_name: name.to_string(),
            offset,
            limit: Some(u32::try_from(limit).unwrap_or(u32::MAX)),
            with_payload: Some(WithPayloadSelector {
                selector_options: Some(with_payload_selector::SelectorOptions::Enable(true)),
            }),
            with_vectors: Some(WithVectorsSelector {
                selector_options: Some(with_vectors_selector::SelectorOptions::Enable(true)),
            }),
            ..Default::default()
        };
        let answer = self
            .client
            .clone()
            .scroll(req)
            .await
            .map_err(|s| format!("Scroll on {}: {}", self.url, s.message()))?
            .into_inner();
        let page = answer
            .result
            .into_iter()
            .map(to_point)
            .collect::<Result<_, _>>()?;
        Ok((page, answer.next_page_offset))
    }

    /// Upserts `points` into `name`, waiting until they are applied.
    pub(crate) async fn upsert(&self, name: &str, points: Page) -> Result<(), String> {
        let req = UpsertPoints {
            collection_name: name.to_string(),
            wait: Some(true),
            points,
            ..Default::default()
        };
        self.client
            .clone()
            .upsert(req)
            .await
            .map_err(|s| format!("Upsert on {}: {}", self.url, s.message()))?;
        Ok(())
    }
}

/// The dense floats of an answer's vector (Qdrant fills `vector`; older servers `data`).
#[allow(deprecated)] // `data` is how servers before Qdrant 1.13 answer.
fn dense(v: VectorOutput) -> Result<Vector, String> {
    let data = match v.vector {
        Some(vector_output::Vector::Dense(d)) => d.data,
        None => v.data,
        Some(_) => {
            return Err("a point has a sparse or multi-vector, which migrate does not copy".into())
        }
    };
    Ok(Vector {
        vector: Some(vector::Vector::Dense(DenseVector { data })),
        ..Default::default()
    })
}

/// A scrolled point as an upsert takes it.
fn to_point(p: RetrievedPoint) -> Result<PointStruct, String> {
    let vectors = match p.vectors.and_then(|v| v.vectors_options) {
        Some(vectors_output::VectorsOptions::Vector(v)) => {
            Some(vectors::VectorsOptions::Vector(dense(v)?))
        }
        Some(vectors_output::VectorsOptions::Vectors(named)) => {
            Some(vectors::VectorsOptions::Vectors(NamedVectors {
                vectors: named
                    .vectors
                    .into_iter()
                    .map(|(name, v)| dense(v).map(|v| (name, v)))
                    .collect::<Result<_, _>>()?,
            }))
        }
        None => None,
    };
    Ok(PointStruct {
        id: p.id,
        payload: p.payload,
        vectors: vectors.map(|v| Vectors {
            vectors_options: Some(v),
        }),
    })
}
