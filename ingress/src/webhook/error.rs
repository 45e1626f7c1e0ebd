//! Why a webhook was not accepted, and the answer each reason gets.

use actix_web::{
    HttpResponse, ResponseError,
    http::{StatusCode, header},
};
use corral_runtime::telemetry::labels::{PublishFailure, RejectReason};

use crate::{refusal_log::DropId, signature};

/// Why a webhook was not accepted. The `Display` text is the `error` field of
/// the response body, so it says what is wrong without revealing internals.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// No token, or not an accepted one.
    #[error("missing or invalid token")]
    Unauthorized,
    /// The signed route refused the signature, or has no secret to check it.
    #[error("{refusal}")]
    Signature {
        /// Why.
        refusal: signature::Refusal,
        /// Seconds for `Retry-After`, sent when no secret is configured.
        retry_after_secs: u32,
    },
    /// A `Content-Type` that is not JSON.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// A `Content-Encoding` other than `identity`: the body would be
    /// compressed bytes, which are not the JSON corral publishes.
    #[error("Content-Encoding {0} is not supported; send the body uncompressed")]
    UnsupportedEncoding(String),
    /// Body over the limit.
    #[error("body exceeds {limit} bytes")]
    TooLarge {
        /// `CORRAL_MAX_BODY_BYTES`.
        limit: usize,
    },
    /// Body is not JSON.
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    /// Body is JSON, but not an object.
    #[error("body must be a JSON object")]
    NotObject,
    /// Body is JSON nested deeper than `CORRAL_MAX_JSON_DEPTH`: no webhook
    /// needs it, and each level costs whoever reads it.
    #[error("body nests objects and arrays deeper than {limit} levels")]
    TooDeep {
        /// `CORRAL_MAX_JSON_DEPTH`.
        limit: usize,
    },
    /// The body did not arrive in time (a client trickling it byte by byte
    /// would otherwise hold a connection and a buffer for ever).
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    /// The body could not be read (the client went away mid-body).
    #[error("could not read the request body")]
    BodyRead(#[source] actix_web::error::PayloadError),
    /// The buffer did not take the webhook.
    #[error("temporarily unable to accept webhooks; retry later")]
    Unavailable {
        /// The metric label of `cause`.
        failure: PublishFailure,
        /// What went wrong, for the log line only.
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
        /// Seconds for `Retry-After`.
        retry_after_secs: u32,
        /// The payload's `drop_id`, for the line on `corral_ingress::refused`.
        drop_id: DropId,
    },
}

impl WebhookError {
    /// The `corral_ingress_rejected_total{reason}` label, for rejections.
    pub(super) fn reject_reason(&self) -> Option<RejectReason> {
        match self {
            WebhookError::Unauthorized => Some(RejectReason::Unauthorized),
            WebhookError::Signature { refusal, .. } => match refusal {
                signature::Refusal::NotConfigured => None,
                signature::Refusal::Missing => Some(RejectReason::MissingSignature),
                signature::Refusal::Stale => Some(RejectReason::StaleTimestamp),
                signature::Refusal::Invalid => Some(RejectReason::InvalidSignature),
            },
            WebhookError::UnsupportedMediaType => Some(RejectReason::UnsupportedMediaType),
            WebhookError::UnsupportedEncoding(_) => Some(RejectReason::UnsupportedEncoding),
            WebhookError::TooLarge { .. } => Some(RejectReason::TooLarge),
            WebhookError::InvalidJson(_) | WebhookError::BodyRead(_) => {
                Some(RejectReason::InvalidJson)
            }
            WebhookError::BodyTimeout(_) => Some(RejectReason::BodyTimeout),
            WebhookError::NotObject => Some(RejectReason::NotObject),
            WebhookError::TooDeep { .. } => Some(RejectReason::TooDeep),
            WebhookError::Unavailable { .. } => None,
        }
    }
}

impl ResponseError for WebhookError {
    fn status_code(&self) -> StatusCode {
        match self {
            WebhookError::Unauthorized => StatusCode::UNAUTHORIZED,
            WebhookError::Signature {
                refusal: signature::Refusal::NotConfigured,
                ..
            } => StatusCode::SERVICE_UNAVAILABLE,
            WebhookError::Signature { .. } => StatusCode::UNAUTHORIZED,
            WebhookError::UnsupportedMediaType | WebhookError::UnsupportedEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            WebhookError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            WebhookError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::InvalidJson(_)
            | WebhookError::NotObject
            | WebhookError::TooDeep { .. }
            | WebhookError::BodyRead(_) => StatusCode::BAD_REQUEST,
            WebhookError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let WebhookError::Unauthorized = self {
            // Senders that put `user:token@` in a callback URL only send the
            // credentials after this challenge.
            response.insert_header((header::WWW_AUTHENTICATE, r#"Basic realm="corral""#));
        }
        if let Some(secs) = self.retry_after() {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        let error = self.to_string();
        match self {
            WebhookError::Signature { refusal, .. } => {
                response.json(serde_json::json!({ "error": error, "code": refusal.code() }))
            }
            _ => response.json(serde_json::json!({ "error": error })),
        }
    }
}

impl WebhookError {
    /// Seconds for `Retry-After`, which every 503 carries.
    fn retry_after(&self) -> Option<u32> {
        match self {
            WebhookError::Unavailable {
                retry_after_secs, ..
            }
            | WebhookError::Signature {
                refusal: signature::Refusal::NotConfigured,
                retry_after_secs,
            } => Some(*retry_after_secs),
            _ => None,
        }
    }
}
