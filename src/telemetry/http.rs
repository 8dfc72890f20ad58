//! The small HTTP listener: `/metrics`, `/healthz`, `/readyz`.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use std::convert::Infallible;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::health::Health;

/// What the endpoints read.
#[derive(Clone)]
pub struct Endpoints {
    /// Renders the Prometheus text format.
    pub metrics: PrometheusHandle,
    /// Connection state.
    pub health: Health,
    /// Checked live by `/readyz`.
    pub pool: PgPool,
}

/// Serves the endpoints on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    endpoints: Endpoints,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = crate::shutdown::requested(&mut shutdown) => break,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let endpoints = endpoints.clone();
                async move { Ok::<_, Infallible>(respond(req, &endpoints).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

async fn respond(req: Request<hyper::body::Incoming>, e: &Endpoints) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            // Process metrics (RSS, CPU seconds, open fds…) as of this scrape.
            metrics_process::Collector::default().collect();
            text(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                e.metrics.render(),
            )
        }
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            let db = tokio::time::timeout(
                Duration::from_secs(1),
                sqlx::query("SELECT 1").execute(&e.pool),
            )
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false);
            e.health.set_database(db);
            let body = format!(
                "{{\"database\":{},\"broker\":{},\"ready\":{}}}\n",
                db,
                e.health.broker(),
                e.health.ready()
            );
            let status = if e.health.ready() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, "application/json", body)
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}
