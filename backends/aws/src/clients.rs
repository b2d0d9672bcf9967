//! The SDK's STS and IAM clients for one connection, and what their errors become.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_sts::config::Credentials;
use aws_sdk_sts::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use mayfly::ConnectionConfig;
use mayfly::Error;

pub const DEFAULT_REGION: &str = "us-east-1";
pub const DEFAULT_MAX_RETRIES: i64 = 3;

pub struct Clients {
    pub sts: aws_sdk_sts::Client,
    pub iam: aws_sdk_iam::Client,
    /// Where each client sends its calls, for error messages.
    pub sts_endpoint: String,
    pub iam_endpoint: String,
}

fn setting<'a>(config: &'a ConnectionConfig, name: &str) -> Option<&'a str> {
    config.setting_str(name).filter(|v| !v.is_empty())
}

/// Clients with the connection's keys, or the SDK's ambient chain (environment, profile,
/// instance role…) when it gives none.
pub async fn build(config: &ConnectionConfig) -> Clients {
    let region = setting(config, "region")
        .unwrap_or(DEFAULT_REGION)
        .to_owned();
    let retries = config
        .setting_i64("max_retries")
        .unwrap_or(DEFAULT_MAX_RETRIES)
        .clamp(0, 10) as u32;
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.clone()))
        .retry_config(RetryConfig::standard().with_max_attempts(retries + 1))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        );
    if let (Some(key), Some(secret)) = (
        setting(config, "access_key"),
        config.secret("secret_key").filter(|s| !s.is_empty()),
    ) {
        loader = loader.credentials_provider(Credentials::new(
            key,
            secret,
            None,
            None,
            "mayfly-connection",
        ));
    }
    let shared = loader.load().await;
    let sts_endpoint = setting(config, "sts_endpoint").map(str::to_owned);
    let iam_endpoint = setting(config, "iam_endpoint").map(str::to_owned);
    let mut sts = aws_sdk_sts::config::Builder::from(&shared);
    if let Some(e) = &sts_endpoint {
        sts = sts.endpoint_url(e);
    }
    let mut iam = aws_sdk_iam::config::Builder::from(&shared);
    if let Some(e) = &iam_endpoint {
        iam = iam.endpoint_url(e);
    }
    Clients {
        sts: aws_sdk_sts::Client::from_conf(sts.build()),
        iam: aws_sdk_iam::Client::from_conf(iam.build()),
        sts_endpoint: sts_endpoint.unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com")),
        iam_endpoint: iam_endpoint.unwrap_or_else(|| "https://iam.amazonaws.com".to_owned()),
    }
}

/// A failed SDK call as mayfly's error, naming the service, its endpoint and the operation.
/// Unreachable is `Unavailable` (nothing was done); a refusal is `Target` with AWS's code
/// and message. Neither carries request data, so no secret.
pub fn call_error<E, R>(service: &str, endpoint: &str, op: &str, err: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => Error::Unavailable(format!(
            "{service} at {endpoint} cannot be reached ({op}): {}",
            DisplayErrorContext(&err)
        )),
        SdkError::ServiceError(s) => {
            let e = s.err();
            Error::Target(format!(
                "{service} at {endpoint} refused {op}: {}: {}",
                e.code().unwrap_or("error"),
                e.message().unwrap_or("no message")
            ))
        }
        _ => Error::Target(format!(
            "{service} at {endpoint}: {op} failed: {}",
            DisplayErrorContext(&err)
        )),
    }
}

/// The AWS error code of a failed call, if AWS answered.
pub fn error_code<E, R>(err: &SdkError<E, R>) -> Option<&str>
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::ServiceError(s) => s.err().code(),
        _ => None,
    }
}
