//! The self-service HTTP API for data-subject requests (`pgveil subject
//! serve`): the back end of a customer portal, which authenticates the
//! customer itself and calls this API with a shared bearer token.
//!
//! | request | does |
//! |---|---|
//! | `GET /v1/subjects/{key}` | export every personal datum |
//! | `POST /v1/subjects/{key}/opt-out/{purpose}` | withdraw consent |
//! | `POST /v1/subjects/{key}/opt-in/{purpose}` | give consent |
//! | `POST /v1/subjects/{key}/corrections` | file corrections (JSON object `{"table.column": "value" or null}`) for review |
//! | `POST /v1/subjects/{key}/erasure` | erase under the policy's erase rules |
//!
//! Each request runs through [`SubjectDesk`], exactly as the command line
//! does, so it lands in the privacy log; reviews stay with the staff
//! (`pgveil subject review`).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{header, Method, Request, Response, StatusCode};
use percent_encoding::percent_decode_str;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use crate::admin::serve_http;
use crate::control::{ControlError, SubjectDesk};
use crate::subject::{Assignment, Request as SubjectRequest, SubjectError};

/// The largest request body accepted.
const BODY_LIMIT: usize = 64 * 1024;
/// The shortest bearer token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// What every request handler shares.
pub struct Portal {
    desk: SubjectDesk,
    token: Vec<u8>,
    actor: String,
}

impl Portal {
    /// A portal that runs requests on `desk` as `actor` for clients that
    /// present `token`.
    pub fn new(desk: SubjectDesk, token: Vec<u8>, actor: String) -> Portal {
        Portal { desk, token, actor }
    }
}

/// Serves the API on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, portal: Arc<Portal>) {
    serve_http(listener, "subject API", move |request| {
        respond(portal.clone(), request)
    })
    .await
}

/// An answer: status and JSON body.
type Answer = (StatusCode, serde_json::Value);

async fn respond(
    portal: Arc<Portal>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let answer = match authorized(&portal, &request) {
        true => answer(&portal, request).await,
        false => problem(
            StatusCode::UNAUTHORIZED,
            "send the portal's token as Authorization: Bearer TOKEN",
        ),
    };
    Ok(reply(answer))
}

fn authorized(portal: &Portal, request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|token| bool::from(token.ct_eq(&portal.token)))
}

async fn answer(portal: &Portal, request: Request<Incoming>) -> Answer {
    let method = request.method().clone();
    let path: Vec<String> = match segments(request.uri().path()) {
        Some(path) => path,
        None => return problem(StatusCode::BAD_REQUEST, "the path is not valid UTF-8"),
    };
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    let subject_request = match (&method, path.as_slice()) {
        (&Method::GET, ["v1", "subjects", key]) => Ok(SubjectRequest::Export {
            customer: (*key).to_owned(),
        }),
        (&Method::POST, ["v1", "subjects", key, "opt-out", purpose]) => {
            Ok(SubjectRequest::OptOut {
                customer: (*key).to_owned(),
                purpose: (*purpose).to_owned(),
            })
        }
        (&Method::POST, ["v1", "subjects", key, "opt-in", purpose]) => Ok(SubjectRequest::OptIn {
            customer: (*key).to_owned(),
            purpose: (*purpose).to_owned(),
        }),
        (&Method::POST, ["v1", "subjects", key, "corrections"]) => {
            corrections(key, request.into_body()).await
        }
        (&Method::POST, ["v1", "subjects", key, "erasure"]) => Ok(SubjectRequest::Erase {
            customer: (*key).to_owned(),
        }),
        (_, ["v1", "subjects", ..]) => Err(problem(
            StatusCode::NOT_FOUND,
            "no such request: see the table of requests in README.md (Data-subject requests over HTTP)",
        )),
        _ => Err(problem(StatusCode::NOT_FOUND, "the API lives under /v1/subjects/")),
    };
    match subject_request {
        Ok(request) => run(portal, request).await,
        Err(answer) => answer,
    }
}

/// The decoded segments of `path`; None when one is not UTF-8.
fn segments(path: &str) -> Option<Vec<String>> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_decode_str(s)
                .decode_utf8()
                .ok()
                .map(|s| s.into_owned())
        })
        .collect()
}

/// A correction request from its JSON body `{"table.column": value}`.
async fn corrections(key: &str, body: Incoming) -> Result<SubjectRequest, Answer> {
    let bytes = Limited::new(body, BODY_LIMIT)
        .collect()
        .await
        .map_err(|_| {
            problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the body must be at most {BODY_LIMIT} bytes"),
            )
        })?
        .to_bytes();
    let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes)
        .map_err(|e| bad_corrections(&format!("the body is not a JSON object: {e}")))?;
    if fields.is_empty() {
        return Err(bad_corrections("the body names no column"));
    }
    let changes = fields
        .into_iter()
        .map(|(target, value)| assignment(&target, value))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SubjectRequest::Correct {
        customer: key.to_owned(),
        changes,
    })
}

fn assignment(target: &str, value: serde_json::Value) -> Result<Assignment, Answer> {
    let (table, column) = target
        .split_once('.')
        .filter(|(t, c)| !t.is_empty() && !c.is_empty())
        .ok_or_else(|| bad_corrections(&format!("\"{target}\" is not table.column")))?;
    let value = match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => {
            return Err(bad_corrections(&format!(
                "{target}: give a string, number, boolean or null"
            )))
        }
    };
    Ok(Assignment {
        table: table.to_owned(),
        column: column.to_owned(),
        value,
    })
}

fn bad_corrections(why: &str) -> Answer {
    problem(
        StatusCode::BAD_REQUEST,
        &format!("{why}; send {{\"table.column\": \"new value\", ...}}"),
    )
}

/// Runs `request`; a correction answers 202 (it waits for review).
async fn run(portal: &Portal, request: SubjectRequest) -> Answer {
    let accepted = matches!(request, SubjectRequest::Correct { .. });
    match portal.desk.run(request, &portal.actor).await {
        Ok(done) if accepted => (StatusCode::ACCEPTED, done.value),
        Ok(done) => (StatusCode::OK, done.value),
        Err(e) => failure(&e),
    }
}

/// The status and message of a failed request. Database and log errors
/// are logged here and answered without detail.
fn failure(error: &ControlError) -> Answer {
    let status = match error {
        ControlError::Subject(SubjectError::UnknownSubject(_)) => StatusCode::NOT_FOUND,
        ControlError::Subject(
            SubjectError::UnknownPurpose { .. } | SubjectError::Column { .. },
        ) => StatusCode::BAD_REQUEST,
        ControlError::Subject(SubjectError::Rule(_)) => StatusCode::CONFLICT,
        ControlError::Audit(_) | ControlError::Connect { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status.is_client_error() {
        return problem(status, &error.to_string());
    }
    tracing::error!(error = %error, "subject API: request failed");
    let message = match error {
        ControlError::Unlogged { .. } => {
            "the request was carried out, but its privacy-log record was not written; see pgveil's log"
        }
        ControlError::Audit(_) => "the privacy log cannot be written; nothing was done",
        ControlError::Connect { .. } => "PostgreSQL cannot be reached; nothing was done",
        _ => "the request failed; see pgveil's log",
    };
    problem(status, message)
}

fn problem(status: StatusCode, message: &str) -> Answer {
    (status, json!({ "error": message }))
}

fn reply((status, body): Answer) -> Response<Full<Bytes>> {
    let text = serde_json::to_vec_pretty(&body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_decoded() {
        assert_eq!(
            segments("/v1/subjects/a%20b/opt-out/direct_marketing"),
            Some(vec![
                "v1".to_owned(),
                "subjects".to_owned(),
                "a b".to_owned(),
                "opt-out".to_owned(),
                "direct_marketing".to_owned()
            ])
        );
        assert_eq!(segments("/v1/subjects/%ff"), None);
    }

    #[test]
    fn assignments_take_scalars_and_null() {
        let a = assignment("customers.city", json!("Kaunas")).unwrap();
        assert_eq!((a.table.as_str(), a.column.as_str()), ("customers", "city"));
        assert_eq!(a.value.as_deref(), Some("Kaunas"));
        assert_eq!(
            assignment("customers.phone", json!(null)).unwrap().value,
            None
        );
        assert_eq!(
            assignment("customers.age", json!(41))
                .unwrap()
                .value
                .as_deref(),
            Some("41")
        );
        let (status, _) = assignment("city", json!("x")).unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = assignment("customers.city", json!(["x"])).unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}
