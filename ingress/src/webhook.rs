//! The webhook routes: authenticate, bound, check it is a JSON object,
//! keep, and answer 200 only once RabbitMQ confirmed it (or, when the broker
//! could not, the PostgreSQL spool committed it).
//!
//! The checks run cheapest-first (token, media type, declared length, then
//! the body) and nothing is published for a request that fails any of them.
//! The payload's fields are not judged here: typing is the worker's job, so a
//! change in the provider's format never turns into a lost webhook.

use std::time::Instant;

use actix_web::{
    HttpRequest, HttpResponse, ResponseError,
    http::{StatusCode, header},
    web,
};
use bytes::BytesMut;
use chrono::Utc;
use corral_shared::{
    envelope::Kind,
    error_chain, json,
    telemetry::{
        labels::{PublishFailure, RejectReason},
        metrics,
    },
};
use futures_util::StreamExt;
use uuid::Uuid;

use crate::{
    auth::Tokens,
    budget::BodyBudget,
    buffer::{Buffer, Kept, Refusal, Webhook},
    refusal_log::{self, Cause, DropId, RefusalLog, Unreadable},
};

/// What the webhook handlers share.
#[derive(Debug)]
pub struct WebhookState<B> {
    /// Accepted tokens.
    pub tokens: Tokens,
    /// Where accepted webhooks are kept.
    pub buffer: B,
    /// `CORRAL_MAX_BODY_BYTES`.
    pub max_body_bytes: usize,
    /// Seconds for `Retry-After` on 503.
    pub retry_after_secs: u32,
    /// `CORRAL_BODY_TIMEOUT_MS`: longest wait for a whole body.
    pub body_timeout: std::time::Duration,
    /// `CORRAL_MAX_IN_FLIGHT_BYTES`: bodies held at once.
    pub body_budget: BodyBudget,
    /// `CORRAL_IN_FLIGHT_WAIT_MS`: longest wait for room in the budget.
    pub in_flight_wait: std::time::Duration,
    /// `CORRAL_MAX_JSON_DEPTH`.
    pub max_json_depth: usize,
    /// Keeps refusals from flooding the log.
    pub refusals: RefusalLog,
}

/// Why a webhook was not accepted. The `Display` text is the `error` field of
/// the response body, so it says what is wrong without revealing internals.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// No token, or not an accepted one.
    #[error("missing or invalid token")]
    Unauthorized,
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
    fn reject_reason(&self) -> Option<RejectReason> {
        match self {
            WebhookError::Unauthorized => Some(RejectReason::Unauthorized),
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
        match self {
            // Senders that put `user:token@` in a callback URL only send the
            // credentials after this challenge.
            WebhookError::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, r#"Basic realm="corral""#));
            }
            WebhookError::Unavailable {
                retry_after_secs, ..
            } => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            _ => {}
        }
        response.json(serde_json::json!({ "error": self.to_string() }))
    }
}

/// `POST /webhooks/dropcowboy/sms`
pub async fn sms<B: Buffer>(
    request: HttpRequest,
    body: web::Payload,
    state: web::Data<WebhookState<B>>,
) -> HttpResponse {
    handle(Kind::Sms, request, body, state).await
}

/// `POST /webhooks/dropcowboy/rvm`
pub async fn rvm<B: Buffer>(
    request: HttpRequest,
    body: web::Payload,
    state: web::Data<WebhookState<B>>,
) -> HttpResponse {
    handle(Kind::Rvm, request, body, state).await
}

async fn handle<B: Buffer>(
    kind: Kind,
    request: HttpRequest,
    body: web::Payload,
    state: web::Data<WebhookState<B>>,
) -> HttpResponse {
    let started = Instant::now();
    let message_id = Uuid::now_v7();
    let response = match accept(kind, message_id, &request, body, &state).await {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({ "id": message_id })),
        Err(err) => {
            log_refusal(&state.refusals, kind, message_id, &request, &err);
            err.error_response()
        }
    };
    metrics::ingress_request(kind, response.status().as_u16(), started.elapsed());
    response
}

/// Counts a refused webhook and logs why, the first of its cause in a second
/// in full and the others in a summary ([`RefusalLog`]); a 503 also gets its
/// own line ([`refusal_log::log_refused`]). Only the path is logged: the
/// query string may hold the token. Never the body.
fn log_refusal(
    refusals: &RefusalLog,
    kind: Kind,
    message_id: Uuid,
    request: &HttpRequest,
    err: &WebhookError,
) {
    let route = kind.as_str();
    let now = tokio::time::Instant::now();
    if let Some(reason) = err.reject_reason() {
        metrics::ingress_rejected(reason);
        if !refusals.admit(Cause::Rejected(reason.as_str()), now) {
            return;
        }
        let error = error_chain(err);
        tracing::info!(
            route,
            reason = reason.as_str(),
            error,
            path = request.path(),
            "webhook rejected"
        );
    } else if let WebhookError::Unavailable {
        failure, drop_id, ..
    } = err
    {
        metrics::ingress_publish_failed(*failure);
        refusal_log::log_refused(kind, failure.as_str(), message_id, drop_id);
        if !refusals.admit(Cause::NotAccepted(failure.as_str()), now) {
            return;
        }
        let error = error_chain(err);
        tracing::warn!(route, %message_id, cause = failure.as_str(), error, "webhook not accepted: 503");
    }
}

async fn accept<B: Buffer>(
    kind: Kind,
    message_id: Uuid,
    request: &HttpRequest,
    mut body: web::Payload,
    state: &WebhookState<B>,
) -> Result<(), WebhookError> {
    if !state.tokens.authorizes(request) {
        return Err(WebhookError::Unauthorized);
    }
    check_media_type(request)?;
    check_content_encoding(request)?;
    let limit = state.max_body_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(WebhookError::TooLarge { limit });
    }
    // Room for the body before a byte of it is read: bodies read first and
    // bounded later would already be in memory.
    let lease = state
        .body_budget
        .lease(declared.unwrap_or(limit), state.in_flight_wait)
        .await
        .map_err(|cause| WebhookError::Unavailable {
            failure: PublishFailure::Overloaded,
            cause: Box::new(cause),
            retry_after_secs: state.retry_after_secs,
            // Reading a body only to log it would bypass the very bound
            // that refused it.
            drop_id: DropId::Unreadable(Unreadable::BodyNotRead),
        })?;
    let received_at = Utc::now();
    let read = async {
        let mut bytes = BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(WebhookError::BodyRead)?;
            if bytes.len() + chunk.len() > limit {
                return Err(WebhookError::TooLarge { limit });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    };
    let bytes = tokio::time::timeout(state.body_timeout, read)
        .await
        .map_err(|_| WebhookError::BodyTimeout(state.body_timeout))??;
    check_json_object(&bytes, state.max_json_depth)?;

    let length = bytes.len();
    let body = bytes.freeze();
    let webhook = Webhook {
        kind,
        body: body.clone(),
        message_id,
        received_at,
    };
    // The body is kept (a reference, not a copy) for the 503 line's
    // `drop_id`, so its lease is kept as long: the buffer may give its own
    // back before its verdict, and the bytes still held must stay counted.
    let kept = state
        .buffer
        .keep(webhook, lease.clone())
        .await
        .map_err(|cause| WebhookError::Unavailable {
            failure: cause.failure(),
            cause: Box::new(cause),
            retry_after_secs: state.retry_after_secs,
            drop_id: DropId::read(&body),
        })?;
    drop((body, lease));
    match kept {
        Kept::Published(confirm) => metrics::ingress_published(kind, confirm),
        Kept::Spooled(cause) => metrics::ingress_spooled(cause),
    }
    tracing::debug!(route = kind.as_str(), %message_id, bytes = length, ?kept, "webhook accepted");
    Ok(())
}

/// A missing `Content-Type` is accepted (some senders omit it); a present one
/// must be `application/json` or a `+json` type.
fn check_media_type(request: &HttpRequest) -> Result<(), WebhookError> {
    let Some(value) = request.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let mime: mime::Mime = value
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or(WebhookError::UnsupportedMediaType)?;
    let json = mime.type_() == mime::APPLICATION
        && (mime.subtype() == mime::JSON || mime.suffix() == Some(mime::JSON));
    if json {
        Ok(())
    } else {
        Err(WebhookError::UnsupportedMediaType)
    }
}

/// Only `identity` (or no `Content-Encoding`) is accepted: nothing here
/// decompresses (actix-web's `compress-*` features are off), so a compressed
/// body would otherwise be refused as invalid JSON, which misleads its sender.
fn check_content_encoding(request: &HttpRequest) -> Result<(), WebhookError> {
    for value in request.headers().get_all(header::CONTENT_ENCODING) {
        let text = String::from_utf8_lossy(value.as_bytes());
        let unsupported = text
            .split(',')
            .map(str::trim)
            .any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity"));
        if unsupported {
            // Bounded and printable: the value is echoed in the answer and the log.
            let shown: String = text
                .chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .take(64)
                .collect();
            return Err(WebhookError::UnsupportedEncoding(shown));
        }
    }
    Ok(())
}

/// Validates the whole document without building it, then checks its depth
/// and its top level: in linear time, however deep it nests.
fn check_json_object(body: &[u8], max_depth: usize) -> Result<(), WebhookError> {
    json::check_object(body, max_depth).map_err(|refusal| match refusal {
        json::Refusal::NotUtf8(_) | json::Refusal::Invalid(_) => {
            WebhookError::InvalidJson(refusal.to_string())
        }
        json::Refusal::TooDeep { limit } => WebhookError::TooDeep { limit },
        json::Refusal::NotObject => WebhookError::NotObject,
    })
}

/// Any other route: 404 with a JSON body.
pub async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({ "error": "not found" }))
}

/// A webhook route with another method: 405.
pub async fn method_not_allowed() -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header((header::ALLOW, "POST"))
        .json(serde_json::json!({ "error": "method not allowed; use POST" }))
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_objects_pass_and_everything_else_is_named() {
        assert!(check_json_object(b" {\"a\": [1, {\"b\": null}]}\n", 32).is_ok());
        assert!(matches!(
            check_json_object(b"[1]", 32),
            Err(WebhookError::NotObject)
        ));
        assert!(matches!(
            check_json_object(b"\"str\"", 32),
            Err(WebhookError::NotObject)
        ));
        assert!(matches!(
            check_json_object(b"42", 32),
            Err(WebhookError::NotObject)
        ));
        assert!(matches!(
            check_json_object(b"{\"a\":1", 32),
            Err(WebhookError::InvalidJson(_))
        ));
        assert!(matches!(
            check_json_object(b"{} {}", 32),
            Err(WebhookError::InvalidJson(_))
        ));
        assert!(matches!(
            check_json_object(b"", 32),
            Err(WebhookError::InvalidJson(_))
        ));
        assert!(matches!(
            check_json_object(b"{\"a\":\"\xff\"}", 32),
            Err(WebhookError::InvalidJson(_))
        ));
        let nested = |depth: usize| format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
        assert!(check_json_object(nested(32).as_bytes(), 32).is_ok());
        let refused = check_json_object(nested(33).as_bytes(), 32).unwrap_err();
        assert!(matches!(refused, WebhookError::TooDeep { limit: 32 }));
        assert_eq!(refused.status_code(), StatusCode::BAD_REQUEST);
        assert_eq!(refused.reject_reason(), Some(RejectReason::TooDeep));
    }

    #[test]
    fn content_encodings_other_than_identity_are_unsupported() {
        use actix_web::test::TestRequest;
        let with = |ce: &str| {
            TestRequest::post()
                .insert_header(("Content-Encoding", ce))
                .to_http_request()
        };
        assert!(check_content_encoding(&TestRequest::post().to_http_request()).is_ok());
        for ce in ["identity", "Identity", " identity , identity", ""] {
            assert!(check_content_encoding(&with(ce)).is_ok(), "{ce:?}");
        }
        for ce in ["gzip", "br", "deflate, identity", "identity, zstd"] {
            let err = check_content_encoding(&with(ce)).expect_err(ce);
            assert_eq!(
                err.to_string(),
                format!("Content-Encoding {ce} is not supported; send the body uncompressed")
            );
            assert_eq!(err.status_code(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
    }

    #[test]
    fn media_types_other_than_json_are_unsupported() {
        use actix_web::test::TestRequest;
        let with = |ct: &str| {
            TestRequest::post()
                .insert_header(("Content-Type", ct))
                .to_http_request()
        };
        assert!(check_media_type(&TestRequest::post().to_http_request()).is_ok());
        assert!(check_media_type(&with("application/json")).is_ok());
        assert!(check_media_type(&with("Application/JSON; charset=utf-8")).is_ok());
        assert!(check_media_type(&with("application/vnd.dropcowboy+json")).is_ok());
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "garbage",
        ] {
            assert!(
                matches!(
                    check_media_type(&with(ct)),
                    Err(WebhookError::UnsupportedMediaType)
                ),
                "{ct}"
            );
        }
    }
}
