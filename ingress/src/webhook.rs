//! The webhook routes: authenticate, bound, check it is a JSON object,
//! keep, and answer 200 only once RabbitMQ confirmed it (or, when the broker
//! could not, the PostgreSQL spool committed it).
//!
//! - [`pipeline`]: the one request pipeline every route runs, cheapest
//!   check first; the routes differ only in how they authenticate.
//! - [`error`]: why a webhook was refused, and the answer each reason gets.

mod error;
mod pipeline;

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, ResponseError, http::header, web};
use corral_contract::envelope::Kind;
use corral_runtime::{error_chain, telemetry::metrics};
use uuid::Uuid;

#[cfg(test)]
use self::pipeline::check_json_object;
pub use self::{error::WebhookError, pipeline::Route};
use crate::{
    auth::Tokens,
    budget::BodyBudget,
    buffer::Buffer,
    refusal_log::{self, Cause, DropId, RefusalLog, Unreadable},
    signature::{self, Signing},
};

/// What the webhook handlers share.
#[derive(Debug)]
pub struct WebhookState<B> {
    /// Accepted tokens (the callback routes).
    pub tokens: Tokens,
    /// The signing secrets (the signed route).
    pub signing: Signing,
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

impl<B> WebhookState<B> {
    /// The error a signature refusal answers with.
    fn refused(&self, refusal: signature::Refusal) -> WebhookError {
        WebhookError::Signature {
            refusal,
            retry_after_secs: self.retry_after_secs,
        }
    }
}

/// `POST /webhooks/dropcowboy/sms`
pub async fn sms<B: Buffer>(
    request: HttpRequest,
    body: web::Payload,
    state: web::Data<WebhookState<B>>,
) -> HttpResponse {
    handle(Route::Callback(Kind::Sms), request, body, state).await
}

/// `POST /webhooks/dropcowboy/rvm`
pub async fn rvm<B: Buffer>(
    request: HttpRequest,
    body: web::Payload,
    state: web::Data<WebhookState<B>>,
) -> HttpResponse {
    handle(Route::Callback(Kind::Rvm), request, body, state).await
}

/// `POST /webhooks/dropcowboy`: Drop Cowboy's signed webhooks, any event.
pub async fn signed<B: Buffer>(
    request: HttpRequest,
    body: web::Payload,
    state: web::Data<WebhookState<B>>,
) -> HttpResponse {
    handle(Route::Signed, request, body, state).await
}

async fn handle<B: Buffer>(
    route: Route,
    request: HttpRequest,
    body: web::Payload,
    state: web::Data<WebhookState<B>>,
) -> HttpResponse {
    let started = Instant::now();
    let message_id = Uuid::now_v7();
    let kind = route.kind();
    let response = match pipeline::accept(route, message_id, &request, body, &state).await {
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
/// query string may hold the token. Never the body, nor a signature header.
fn log_refusal(
    refusals: &RefusalLog,
    kind: Kind,
    message_id: Uuid,
    request: &HttpRequest,
    err: &WebhookError,
) {
    let route = kind.as_str();
    let now = tokio::time::Instant::now();
    let not_read = DropId::Unreadable(Unreadable::BodyNotRead);
    let (failure, drop_id) = match err {
        WebhookError::Unavailable {
            failure, drop_id, ..
        } => {
            metrics::ingress_publish_failed(*failure);
            (failure.as_str(), drop_id)
        }
        WebhookError::Signature { refusal, .. } if err.reject_reason().is_none() => {
            (refusal.code(), &not_read)
        }
        _ => {
            let Some(reason) = err.reject_reason() else {
                return;
            };
            metrics::ingress_rejected(reason);
            if refusals.admit(Cause::Rejected(reason.as_str()), now) {
                let error = error_chain(err);
                let path = request.path();
                tracing::info!(
                    route,
                    reason = reason.as_str(),
                    error,
                    path,
                    "webhook rejected"
                );
            }
            return;
        }
    };
    refusal_log::log_refused(kind, failure, message_id, drop_id);
    if refusals.admit(Cause::NotAccepted(failure), now) {
        let error = error_chain(err);
        tracing::warn!(route, %message_id, cause = failure, error, "webhook not accepted: 503");
    }
}

/// The webhook routes, each answering 405 to any method but POST.
pub fn routes<B: Buffer>(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/webhooks/dropcowboy/sms")
                .route(web::post().to(sms::<B>))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/webhooks/dropcowboy/rvm")
                .route(web::post().to(rvm::<B>))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/webhooks/dropcowboy")
                .route(web::post().to(signed::<B>))
                .default_service(web::to(method_not_allowed)),
        );
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
