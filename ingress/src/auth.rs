//! Webhook tokens.
//!
//! Drop Cowboy signs nothing it sends to a `callback_url`, so a secret in the
//! callback URL is the only way to tell those calls from anyone else's (its
//! signed account webhooks are [`crate::signature`]'s). The token may arrive
//! as the `token` query parameter, as `Authorization: Bearer <token>`, or as
//! the password of HTTP Basic auth (a callback URL
//! `https://corral:<token>@host/...`).
//!
//! Candidates and configured tokens are compared as SHA-256 digests with a
//! constant-time equality, every configured token every time, so neither the
//! position of the first wrong byte nor the length of a token leaks through
//! timing.
//!
//! A request offers at most two candidates, one `token` query parameter and
//! one `Authorization` header: a request with more `token` parameters is
//! refused before any is hashed, so a sprayer cannot make one request cost
//! thousands of digests.

use actix_web::{HttpRequest, http::header};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The accepted tokens, kept only as digests.
#[derive(Clone)]
pub struct Tokens {
    /// Digests of the configured tokens.
    digests: Vec<[u8; 32]>,
    /// No token configured, and `--allow-unauthenticated`: anything goes.
    open: bool,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print tokens or their digests.
        f.debug_struct("Tokens")
            .field("count", &self.digests.len())
            .field("open", &self.open)
            .finish()
    }
}

impl Tokens {
    /// Tokens to accept. No token refuses every request, unless
    /// `allow_unauthenticated` turns authentication off (a deployment that
    /// takes only signed webhooks needs no token, and its callback routes
    /// stay closed).
    pub fn new(tokens: &[String], allow_unauthenticated: bool) -> Self {
        Self {
            digests: tokens.iter().map(|t| digest(t.as_bytes())).collect(),
            open: tokens.is_empty() && allow_unauthenticated,
        }
    }

    /// Whether requests need no token at all.
    pub fn open(&self) -> bool {
        self.open
    }

    /// Warns loudly at start when no token is needed: anyone who can reach
    /// `listen` can then write webhooks.
    pub fn announce(&self, listen: &str) {
        if self.open {
            tracing::warn!(
                "AUTHENTICATION IS OFF (--allow-unauthenticated): anyone who can reach {listen} \
                 can write webhooks into your database. Never run this way in production."
            );
        }
    }

    /// Whether `request` carries an accepted token in any of the three places.
    pub fn authorizes(&self, request: &HttpRequest) -> bool {
        if self.open {
            return true;
        }
        let Some(candidates) = candidates(request) else {
            return false;
        };
        let mut accepted = false;
        for candidate in candidates.iter().flatten() {
            accepted |= self.matches(candidate.as_bytes());
        }
        accepted
    }

    fn matches(&self, candidate: &[u8]) -> bool {
        let candidate = digest(candidate);
        self.digests
            .iter()
            .fold(subtle::Choice::from(0), |acc, token| {
                acc | token.ct_eq(&candidate)
            })
            .into()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The tokens the request offers: its `token` query parameter and its
/// Authorization header's. `None` when the query holds more than one `token`.
fn candidates(request: &HttpRequest) -> Option<[Option<String>; 2]> {
    let mut in_query = form_urlencoded::parse(request.query_string().as_bytes())
        .filter(|(key, _)| key == "token")
        .map(|(_, value)| value.into_owned());
    let from_query = in_query.next();
    if in_query.next().is_some() {
        return None;
    }
    Some([from_query, from_header(request)])
}

/// The token of an `Authorization: Bearer` or `Basic` header.
fn from_header(request: &HttpRequest) -> Option<String> {
    let mut found = None;
    if let Some(value) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, credentials) = value.trim().split_once(' ').unwrap_or((value, ""));
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            found = Some(credentials.to_owned());
        } else if scheme.eq_ignore_ascii_case("basic") {
            let password = base64::engine::general_purpose::STANDARD
                .decode(credentials)
                .ok()
                .and_then(|decoded| String::from_utf8(decoded).ok())
                .and_then(|pair| {
                    pair.split_once(':')
                        .map(|(_, password)| password.to_owned())
                });
            found = password;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(&["old-secret".into(), "new-secret".into()], false)
    }

    #[test]
    fn each_place_and_each_rotated_token_is_accepted() {
        let basic = base64::engine::general_purpose::STANDARD.encode("corral:new-secret");
        for request in [
            TestRequest::post()
                .uri("/x?token=old-secret")
                .to_http_request(),
            TestRequest::post()
                .uri("/x?a=1&token=new%2Dsecret")
                .to_http_request(),
            TestRequest::post()
                .insert_header(("Authorization", "Bearer new-secret"))
                .to_http_request(),
            TestRequest::post()
                .insert_header(("Authorization", format!("Basic {basic}")))
                .to_http_request(),
        ] {
            assert!(tokens().authorizes(&request), "{request:?}");
        }
    }

    #[test]
    fn wrong_missing_and_malformed_tokens_are_refused() {
        let wrong_basic = base64::engine::general_purpose::STANDARD.encode("new-secret:nope");
        for request in [
            TestRequest::post().uri("/x").to_http_request(),
            TestRequest::post().uri("/x?token=").to_http_request(),
            TestRequest::post()
                .uri("/x?token=new-secre")
                .to_http_request(),
            TestRequest::post()
                .uri("/x?tok=new-secret")
                .to_http_request(),
            TestRequest::post()
                .insert_header(("Authorization", "Bearer"))
                .to_http_request(),
            TestRequest::post()
                .insert_header(("Authorization", "Token new-secret"))
                .to_http_request(),
            TestRequest::post()
                .insert_header(("Authorization", "Basic !!!"))
                .to_http_request(),
            TestRequest::post()
                .insert_header(("Authorization", format!("Basic {wrong_basic}")))
                .to_http_request(),
        ] {
            assert!(!tokens().authorizes(&request), "{request:?}");
        }
    }

    #[test]
    fn more_than_one_query_token_is_refused_unhashed() {
        let request = |query: &str| TestRequest::post().uri(query).to_http_request();
        // The right token, hidden among others, is not looked for.
        for query in [
            "/x?token=wrong&token=new-secret",
            "/x?token=new-secret&token=new-secret",
            "/x?token=new-secret&a=1&token=",
        ] {
            assert!(candidates(&request(query)).is_none(), "{query}");
            assert!(!tokens().authorizes(&request(query)), "{query}");
        }
        let spray: String = (0..1_000).map(|i| format!("token=guess{i}&")).collect();
        assert!(candidates(&request(&format!("/x?{spray}"))).is_none());
        // One in the query and one in a header are both looked at.
        let both = TestRequest::post()
            .uri("/x?token=wrong")
            .insert_header(("Authorization", "Bearer new-secret"))
            .to_http_request();
        assert_eq!(
            candidates(&both),
            Some([Some("wrong".to_owned()), Some("new-secret".to_owned())])
        );
        assert!(tokens().authorizes(&both));
    }

    #[test]
    fn no_tokens_refuse_everything_unless_unauthenticated_is_allowed() {
        let request = || TestRequest::post().uri("/x?token=").to_http_request();
        let closed = Tokens::new(&[], false);
        assert!(!closed.open());
        assert!(!closed.authorizes(&request()));
        let open = Tokens::new(&[], true);
        assert!(open.open());
        assert!(open.authorizes(&request()));
        // Configured tokens are required even with the flag.
        assert!(!Tokens::new(&["t".into()], true).authorizes(&request()));
    }
}
