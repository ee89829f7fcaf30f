//! The S3 server the S3 sections use, and the plain SDK uploads and downloads they are
//! measured against.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::env_or;

pub(crate) async fn sdk_client(endpoint: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(env_or(
            "S3_TEST_REGION",
            "us-east-1",
        )))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            env_or("S3_TEST_ACCESS_KEY", ""),
            env_or("S3_TEST_SECRET_KEY", ""),
            None,
            None,
            "bench",
        ))
        // Garage on loopback has been seen to stall a request for minutes; give the
        // baseline the same way out as ours (`request_timeout_secs`: retry after 60 s)
        // instead of hanging the run.
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(60))
                .build(),
        )
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(5))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Uploads `parts` (each one part, in order) as one object with a multipart upload,
/// `concurrency` parts in flight. Returns the bytes.
async fn multipart(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    parts: impl futures::Stream<Item = Vec<u8>> + Unpin,
    concurrency: usize,
) -> u64 {
    use aws_sdk_s3::primitives::ByteStream;
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    use futures::StreamExt;
    let up = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap().to_string();
    let mut set = tokio::task::JoinSet::new();
    let (mut done, mut total) = (Vec::new(), 0u64);
    let mut numbered = parts.enumerate();
    while let Some((i, buf)) = numbered.next().await {
        let n = i as i32 + 1;
        total += buf.len() as u64;
        while set.len() >= concurrency {
            done.push(set.join_next().await.unwrap().unwrap());
        }
        let (s3, bucket, key, id) = (s3.clone(), bucket.to_string(), key.to_string(), id.clone());
        set.spawn(async move {
            let out = s3
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(id)
                .part_number(n)
                .body(ByteStream::from(buf))
                .send()
                .await
                .unwrap();
            CompletedPart::builder()
                .part_number(n)
                .e_tag(out.e_tag().unwrap())
                .build()
        });
    }
    while let Some(p) = set.join_next().await {
        done.push(p.unwrap());
    }
    done.sort_by_key(|p| p.part_number());
    let parts = CompletedMultipartUpload::builder()
        .set_parts(Some(done))
        .build();
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .multipart_upload(parts)
        .send()
        .await
        .unwrap();
    total
}

/// Parts of `part` bytes (the last shorter) from `read`.
fn parts_of<R: tokio::io::AsyncRead + Unpin>(
    read: R,
    part: usize,
) -> impl futures::Stream<Item = Vec<u8>> + Unpin {
    use tokio::io::AsyncReadExt;
    Box::pin(futures::stream::unfold(read, move |mut r| async move {
        let mut buf = Vec::with_capacity(part);
        (&mut r)
            .take(part as u64)
            .read_to_end(&mut buf)
            .await
            .unwrap();
        (!buf.is_empty()).then_some((buf, r))
    }))
}

async fn delete(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) {
    s3.delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
}

/// A plain multipart upload of an existing file: `part` bytes, `concurrency` in flight.
/// The object is deleted afterwards unless `keep`.
pub(crate) async fn plain_upload(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    file: &Path,
    part: usize,
    concurrency: usize,
    keep: bool,
) -> f64 {
    let t = Instant::now();
    let f = tokio::fs::File::open(file).await.unwrap();
    multipart(s3, bucket, key, parts_of(f, part), concurrency).await;
    let elapsed = t.elapsed().as_secs_f64();
    if !keep {
        delete(s3, bucket, key).await;
    }
    elapsed
}

/// An object's body as a reader.
async fn get(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> impl tokio::io::AsyncRead + Unpin {
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    out.body.into_async_read()
}

/// A plain download of an object into a local file, fsynced.
pub(crate) async fn plain_download(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    dest: &Path,
) -> f64 {
    use tokio::io::AsyncWriteExt;
    let t = Instant::now();
    let mut body = get(s3, bucket, key).await;
    let mut f =
        tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::create(dest).await.unwrap());
    tokio::io::copy(&mut body, &mut f).await.unwrap();
    f.flush().await.unwrap();
    f.into_inner().sync_all().await.unwrap();
    t.elapsed().as_secs_f64()
}

/// The S3 server the S3 sections use, and a plain SDK client for the baselines.
pub(crate) struct S3 {
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) client: aws_sdk_s3::Client,
    pub(crate) bucket: String,
    pub(crate) endpoint: String,
}

impl S3 {
    /// The service's environment for S3 snapshots under `prefix`.
    pub(crate) fn env(&self, prefix: &str) -> Vec<(String, String)> {
        let p = "QDRANT__STORAGE__SNAPSHOTS_CONFIG__";
        [
            ("SNAPSHOTS_STORAGE", "s3".to_string()),
            ("S3_CONFIG__BUCKET", self.bucket.clone()),
            ("S3_CONFIG__REGION", env_or("S3_TEST_REGION", "us-east-1")),
            ("S3_CONFIG__ACCESS_KEY", env_or("S3_TEST_ACCESS_KEY", "")),
            ("S3_CONFIG__SECRET_KEY", env_or("S3_TEST_SECRET_KEY", "")),
            ("S3_CONFIG__ENDPOINT_URL", self.endpoint.clone()),
            ("S3_CONFIG__PREFIX", prefix.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("{p}{k}"), v))
        .collect()
    }

    /// Every object under `prefix/`: key and size.
    fn objects_under(&self, prefix: &str) -> Vec<(String, u64)> {
        self.rt.block_on(async {
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(format!("{prefix}/"))
                .into_paginator()
                .send();
            let mut out = Vec::new();
            while let Some(page) = pages.next().await {
                for o in page.unwrap().contents() {
                    out.push((o.key().unwrap().to_string(), o.size().unwrap_or(0) as u64));
                }
            }
            out
        })
    }

    /// Deletes every object under `prefix/`.
    pub(crate) fn empty(&self, prefix: &str) {
        for (key, _) in self.objects_under(prefix) {
            self.rt.block_on(delete(&self.client, &self.bucket, &key));
        }
    }

    /// Bytes stored under `prefix/`, as the bucket lists them.
    pub(crate) fn bytes_under(&self, prefix: &str) -> u64 {
        self.objects_under(prefix).iter().map(|(_, n)| n).sum()
    }
}

/// A plain multipart upload of an HTTP response's body as it streams: `part` bytes per
/// part, `concurrency` parts in flight; the object is deleted afterwards. Returns the bytes.
pub(crate) async fn plain_stream_upload(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    resp: reqwest::Response,
    part: usize,
    concurrency: usize,
) -> u64 {
    use futures::TryStreamExt;
    let body = resp.bytes_stream().map_err(std::io::Error::other);
    let read = tokio_util::io::StreamReader::new(body);
    let total = multipart(s3, bucket, key, parts_of(read, part), concurrency).await;
    delete(s3, bucket, key).await;
    total
}

/// A plain download of an object, read to the end and dropped. Returns the bytes.
pub(crate) async fn plain_read(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> u64 {
    let mut body = get(s3, bucket, key).await;
    tokio::io::copy(&mut body, &mut tokio::io::sink())
        .await
        .unwrap()
}
