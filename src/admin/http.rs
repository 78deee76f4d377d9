//! The admin HTTP server (HTTP/1.1, hyper): `GET /health` and `GET /metrics`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
use tokio::net::TcpListener;

use crate::server::ServerState;

/// How long `/health` waits for PostgreSQL to answer.
const PROBE_LIMIT: Duration = Duration::from_secs(5);
/// How long a client may take to send its request headers.
const HEADER_LIMIT: Duration = Duration::from_secs(10);

/// Serves the admin endpoint on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<ServerState>) {
    serve_http(listener, "admin endpoint", move |request| {
        respond(state.clone(), request)
    })
    .await
}

/// Serves HTTP/1.1 on `listener` with `handler` until the task is dropped;
/// `name` names the server in log lines.
pub async fn serve_http<F, Fut>(listener: TcpListener, name: &'static str, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                tracing::warn!(error = %e, "{name}: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_LIMIT)
                .serve_connection(TokioIo::new(tcp), service_fn(handler));
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "{name}: connection ended with an error");
            }
        });
    }
}

async fn respond(
    state: Arc<ServerState>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match (request.method(), request.uri().path()) {
        (&Method::GET, "/health") => health(&state).await,
        (&Method::GET, "/metrics") => metrics(&state),
        (_, "/health" | "/metrics") => text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into()),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: the admin endpoint serves /health and /metrics\n".into(),
        ),
    };
    Ok(response)
}

/// 200 when the proxy accepts sessions and PostgreSQL answers, 503 with
/// the reason otherwise.
async fn health(state: &ServerState) -> Response<Full<Bytes>> {
    if let Some(reason) = state.refusing_sessions() {
        return text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n"));
    }
    match tokio::time::timeout(PROBE_LIMIT, state.probe_backend()).await {
        Ok(Ok(())) => text(StatusCode::OK, "ok\n".into()),
        Ok(Err(e)) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("PostgreSQL does not answer: {e}\n"),
        ),
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "PostgreSQL did not answer within {} s\n",
                PROBE_LIMIT.as_secs()
            ),
        ),
    }
}

fn metrics(state: &ServerState) -> Response<Full<Bytes>> {
    match state.metrics().encode(&state.metrics_snapshot()) {
        Ok(body) => response(StatusCode::OK, CONTENT_TYPE, body),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}\n"),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", body)
}

fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}
