//! The HTTP ceiling: a bare actix-web server with ingress's routes whose
//! handler reads the whole body and answers 200 with an id, touching no
//! broker. Driven by the same load generator at the same connection counts
//! as ingress, it is the most any actix-web service answers on this machine:
//! what ingress's own HTTP rate is divided by.

use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use uuid::Uuid;

/// Ingress's default `CORRAL_MAX_BODY_BYTES`: the same bodies are read in
/// full, and a larger one is refused as ingress would.
const MAX_BODY_BYTES: usize = 65_536;

/// Serves `POST /webhooks/dropcowboy/{kind}` on `listen` with `workers` HTTP
/// workers (0: one per CPU, as ingress) until the process is stopped, each
/// answer given `hold` after its body was read (zero: at once; else as long
/// as ingress waits for its broker, to see what holding requests costs
/// actix-web itself). Settings that shape throughput
/// follow ingress: keep-alive 75 s, a listen backlog of 4,096, and no
/// connection cap below the load generator's (actix's own is 25,000 per worker).
pub async fn serve_http_ceiling(
    listen: &str,
    workers: usize,
    hold: Duration,
) -> anyhow::Result<()> {
    let workers = match workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    HttpServer::new(move || {
        App::new()
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .route(
                "/webhooks/dropcowboy/{kind}",
                web::post().to(move |body| accept(body, hold)),
            )
    })
    .workers(workers)
    .backlog(4096)
    .keep_alive(Duration::from_secs(75))
    .disable_signals()
    .bind(listen)?
    .run()
    .await?;
    Ok(())
}

/// Takes the whole body (`Bytes` reads it to the end) and answers as ingress
/// does on success, `{"id": …}`, so both send answers of the same size.
async fn accept(body: web::Bytes, hold: Duration) -> HttpResponse {
    std::hint::black_box(&body);
    if !hold.is_zero() {
        actix_web::rt::time::sleep(hold).await;
    }
    HttpResponse::Ok().json(serde_json::json!({ "id": Uuid::now_v7() }))
}
