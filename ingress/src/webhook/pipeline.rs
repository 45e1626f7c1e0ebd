//! The one way every webhook route takes a request, from its headers to
//! its verdict. The routes differ only in how they authenticate: the
//! callback routes by token (and a JSON `Content-Type`) before the body, the
//! signed route by the signature headers before the body and the HMAC over
//! the raw bytes after it, before anything parses them.
//!
//! The checks run cheapest-first and nothing is published for a request
//! that fails any of them. The payload's fields are not judged here: typing
//! is the worker's job, so a change in the provider's format never turns
//! into a lost webhook.

use actix_web::{HttpRequest, http::header, web};
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use corral_contract::{envelope::Kind, json};
use corral_runtime::{telemetry::labels::PublishFailure, telemetry::metrics};
use futures_util::StreamExt;
use uuid::Uuid;

use super::{WebhookError, WebhookState};
use crate::{
    budget::Lease,
    buffer::{Buffer, Kept, Refusal, Webhook},
    refusal_log::{DropId, Unreadable},
    signature::Signed,
};

/// A webhook route: how it authenticates, and the kind it publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/webhooks/dropcowboy/sms` or `/rvm`: a token, a JSON body.
    Callback(Kind),
    /// `/webhooks/dropcowboy`: Drop Cowboy's signature, any `Content-Type`.
    Signed,
}

impl Route {
    /// What its webhooks are published as.
    pub fn kind(self) -> Kind {
        match self {
            Route::Callback(kind) => kind,
            Route::Signed => Kind::Event,
        }
    }
}

/// Takes one request through every check into the buffer; `Ok` once the
/// webhook is durably held.
pub(super) async fn accept<B: Buffer>(
    route: Route,
    message_id: Uuid,
    request: &HttpRequest,
    body: web::Payload,
    state: &WebhookState<B>,
) -> Result<(), WebhookError> {
    let signed = authenticate(route, request, state)?;
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
    let bytes = read_body(body, declared, state).await?;
    if let Some(signed) = signed {
        state
            .signing
            .verify(&signed, &bytes)
            .map_err(|refusal| state.refused(refusal))?;
    }
    check_json_object(&bytes, state.max_json_depth)?;
    keep(
        route.kind(),
        message_id,
        bytes.freeze(),
        received_at,
        lease,
        state,
    )
    .await
}

/// The route's own checks before the body: the token and the media type,
/// or the signature's headers (whose bytes are verified once read).
fn authenticate<B>(
    route: Route,
    request: &HttpRequest,
    state: &WebhookState<B>,
) -> Result<Option<Signed>, WebhookError> {
    match route {
        Route::Callback(_) => {
            if !state.tokens.authorizes(request) {
                return Err(WebhookError::Unauthorized);
            }
            check_media_type(request)?;
            Ok(None)
        }
        // The provider's own receiver takes any Content-Type, and so must
        // this route: a 415 is never retried, so the event would be lost.
        Route::Signed => state
            .signing
            .admit(request)
            .map(Some)
            .map_err(|refusal| state.refused(refusal)),
    }
}

/// The whole body, bounded by `CORRAL_MAX_BODY_BYTES` as it arrives and by
/// `CORRAL_BODY_TIMEOUT_MS` in all.
async fn read_body<B>(
    mut body: web::Payload,
    declared: Option<usize>,
    state: &WebhookState<B>,
) -> Result<BytesMut, WebhookError> {
    let limit = state.max_body_bytes;
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
    tokio::time::timeout(state.body_timeout, read)
        .await
        .map_err(|_| WebhookError::BodyTimeout(state.body_timeout))?
}

/// Hands the checked body to the buffer and counts where it went.
async fn keep<B: Buffer>(
    kind: Kind,
    message_id: Uuid,
    body: Bytes,
    received_at: DateTime<Utc>,
    lease: Lease,
    state: &WebhookState<B>,
) -> Result<(), WebhookError> {
    let length = body.len();
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
pub(super) fn check_json_object(body: &[u8], max_depth: usize) -> Result<(), WebhookError> {
    json::check_object(body, max_depth).map_err(|refusal| match refusal {
        json::Refusal::NotUtf8(_) | json::Refusal::Invalid(_) => {
            WebhookError::InvalidJson(refusal.to_string())
        }
        json::Refusal::TooDeep { limit } => WebhookError::TooDeep { limit },
        json::Refusal::NotObject => WebhookError::NotObject,
    })
}

#[cfg(test)]
mod tests {
    use actix_web::{ResponseError as _, http::StatusCode};
    use corral_runtime::telemetry::labels::RejectReason;

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
