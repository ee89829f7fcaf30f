//! Every environment variable the service reads, in one place.

/// Prefix of configuration overrides: `QDRANT__SECTION__KEY` sets `section.key`.
pub const CONFIG_PREFIX: &str = "QDRANT__";
/// Separator between nesting levels in configuration variables.
pub const CONFIG_SEPARATOR: &str = "__";
/// Standard AWS access key id, used when `s3_config.access_key` is not set.
pub const AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
/// Standard AWS secret key, used when `s3_config.secret_key` is not set.
pub const AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
/// Standard AWS region, used when `s3_config.region` is not set.
pub const AWS_REGION: &str = "AWS_REGION";
/// Older spelling of the AWS region variable, read after [`AWS_REGION`].
pub const AWS_DEFAULT_REGION: &str = "AWS_DEFAULT_REGION";
/// Standard S3 endpoint override, used when `s3_config.endpoint_url` is not set.
pub const AWS_ENDPOINT_URL_S3: &str = "AWS_ENDPOINT_URL_S3";
/// Generic AWS endpoint override, read after [`AWS_ENDPOINT_URL_S3`].
pub const AWS_ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";
/// Log filter in `tracing_subscriber::EnvFilter` syntax; overrides `log_level`.
pub const RUST_LOG: &str = "RUST_LOG";
